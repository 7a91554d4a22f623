// The orchestrator playground: a chat over /v1/chat/completions (streamed), live per-node progress
// from the run's SSE events, media inline, the plan as a graph, recent runs and their artifacts.
// Plain browser JavaScript, no build step; everything goes through the public REST API.
"use strict";

const state = {
  key: localStorage.getItem("orchestrator.apiKey") || "",
  messages: [],        // the conversation as sent to the server (the server resolves artifact links)
  attachments: [],     // {file, ref?}
  busy: false,
};

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const child of children) if (child) node.append(child);
  return node;
};
const SVG = "http://www.w3.org/2000/svg";
const svg = (tag, attrs = {}) => {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
};

// ------------------------------------------------------------------ HTTP
function headers(extra = {}) {
  return state.key ? { ...extra, Authorization: `Bearer ${state.key}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (response.status === 401) {
    showKeyBar(state.key ? "That key was refused." : "");
    throw new Error("this server needs an API key");
  }
  return response;
}

async function errorText(response) {
  try {
    const doc = await response.json();
    return (doc.error && doc.error.message) || response.statusText;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

function withKey(url) {
  if (!state.key || url.includes("sig=")) return url;
  return url + (url.includes("?") ? "&" : "?") + "api_key=" + encodeURIComponent(state.key);
}

// ------------------------------------------------------------------ API key
function showKeyBar(message) {
  $("#key-bar").hidden = false;
  $("#key-status").textContent = message || "";
  $("#api-key").focus();
}

async function probe() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (response.status === 401) {
    showKeyBar(state.key ? "That key was refused." : "");
    return false;
  }
  $("#key-bar").hidden = !state.key;
  $("#key-status").textContent = state.key ? "Key accepted." : "";
  const doc = await response.json();
  const select = $("#model");
  const current = select.value;
  select.replaceChildren();
  const groups = { chat: el("optgroup", { label: "Agent and graphs" }), tools: el("optgroup", { label: "Single tools" }) };
  for (const model of doc.data || []) {
    const group = model.endpoints ? groups.tools : groups.chat;  // a media tool runs once on the message
    group.append(el("option", { value: model.id, text: model.id, title: model.description || "" }));
  }
  select.append(groups.chat, groups.tools);
  if ([...select.options].some((o) => o.value === current)) select.value = current;
  refreshRuns();
  return true;
}

$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("#api-key").value.trim();
  localStorage.setItem("orchestrator.apiKey", state.key);
  probe();
});

// ------------------------------------------------------------------ attachments
function modalityOf(file) {
  const major = (file.type || "").split("/")[0];
  return ["image", "audio", "video"].includes(major) ? major : null;
}

function addFiles(files) {
  for (const file of files) {
    if (!modalityOf(file)) {
      alert(`${file.name}: only images, audio and video can be attached`);
      continue;
    }
    state.attachments.push({ file });
  }
  renderAttachments();
}

function renderAttachments() {
  const list = $("#attachments");
  list.replaceChildren();
  state.attachments.forEach((item, index) => {
    list.append(el("li", {}, `${modalityOf(item.file)}: ${item.file.name}`,
      el("button", { type: "button", "aria-label": `Remove ${item.file.name}`, text: "✕",
        onclick: () => { state.attachments.splice(index, 1); renderAttachments(); } })));
  });
}

$("#file").addEventListener("change", (event) => { addFiles(event.target.files); event.target.value = ""; });
const chat = $(".chat");
chat.addEventListener("dragover", (event) => { event.preventDefault(); chat.classList.add("dragging"); });
chat.addEventListener("dragleave", (event) => { if (event.target === chat) chat.classList.remove("dragging"); });
chat.addEventListener("drop", (event) => {
  event.preventDefault();
  chat.classList.remove("dragging");
  addFiles(event.dataTransfer.files);
});

async function upload(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const response = await api("/v1/artifacts", { method: "POST", body: form });
  if (!response.ok) throw new Error(`${file.name}: ${await errorText(response)}`);
  return response.json();
}

// ------------------------------------------------------------------ rendering
function mediaElement(artifact) {
  const url = artifact.url;
  const caption = el("figcaption", { text: artifact.name || artifact.modality });
  if (artifact.modality === "image") {
    return el("figure", { "data-artifact": artifact.id },
      el("img", { src: url, alt: `${artifact.name || "image"} (${artifact.id.slice(7, 19)})`, loading: "lazy" }), caption);
  }
  if (artifact.modality === "audio") {
    return el("figure", { "data-artifact": artifact.id }, el("audio", { src: url, controls: "", preload: "metadata" }), caption);
  }
  if (artifact.modality === "video") {
    return el("figure", { "data-artifact": artifact.id },
      el("video", { src: url, controls: "", preload: "metadata", playsinline: "" }), caption);
  }
  return null;
}

const SHOWN = new Set(["image", "audio", "video"]);  // text and JSON outputs are in the answer itself

function addMedia(container, artifact) {
  if (!SHOWN.has(artifact.modality)) return;
  if (container.querySelector(`[data-artifact="${artifact.id}"]`)) return;
  container.append(mediaElement(artifact));
}

const ARTIFACT_LINK = /!?\[([^\]]*)\]\(([^)\s]*\/v1\/artifacts\/(sha256:[0-9a-f]{64})[^)\s]*)\)/g;
const PLAIN_LINK = /\[([^\]]+)\]\((https?:\/\/[^)\s]+)\)/g;

// The answer's text without its artifact links (their media are shown below it), other links clickable.
function renderText(node, text) {
  node.replaceChildren();
  const cleaned = text.replace(ARTIFACT_LINK, "").replace(/\n{3,}/g, "\n\n").trim();
  let last = 0;
  for (const m of cleaned.matchAll(PLAIN_LINK)) {
    node.append(cleaned.slice(last, m.index));
    node.append(el("a", { href: m[2], target: "_blank", rel: "noopener", text: m[1] }));
    last = m.index + m[0].length;
  }
  node.append(cleaned.slice(last));
}

function imageLinks(text) {
  const found = [];
  for (const m of text.matchAll(ARTIFACT_LINK)) {
    if (m[0].startsWith("!")) found.push({ id: m[3], url: m[2], modality: "image", name: m[1] });
  }
  return found;
}

function addMessage(role, label) {
  $("#empty-hint")?.remove();
  const item = el("li", { class: `msg ${role}`, "data-status": role === "assistant" ? "running" : "done" },
    el("div", { class: "who" }, el("span", { text: label })),
    el("div", { class: "text" }),
    el("div", { class: "media" }),
    el("ul", { class: "progress", "aria-label": "Progress per step" }),
    el("div", { class: "plan" }));
  $("#log").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

// ------------------------------------------------------------------ progress and plan
function nodeRow(item, node, tool) {
  const list = item.querySelector(".progress");
  let row = list.querySelector(`li[data-node="${CSS.escape(node)}"]`);
  if (!row) {
    row = el("li", { "data-node": node, "data-status": "pending" },
      el("span", { class: "name", text: tool ? `${node} · ${tool}` : node }),
      el("progress", { max: "1", value: "0", "aria-label": `${node} progress` }),
      el("span", { class: "state", text: "waiting" }));
    list.append(row);
  }
  return row;
}

function setNode(item, node, status, fraction, tool) {
  const row = nodeRow(item, node, tool);
  row.dataset.status = status;
  row.querySelector(".state").textContent = { running: "running", done: "done", cached: "cached",
    failed: "failed", skipped: "skipped", pending: "waiting" }[status] || status;
  const bar = row.querySelector("progress");
  if (fraction !== undefined) bar.value = fraction;
  if (status === "done" || status === "cached") bar.value = 1;
  const box = item.querySelector(`.plan g[data-node="${CSS.escape(node)}"]`);
  if (box) box.dataset.status = status === "cached" ? "done" : status;
}

function drawPlan(item, tasks) {
  const holder = item.querySelector(".plan");
  holder.replaceChildren();
  if (!tasks || !tasks.length) return;
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const level = new Map();
  const depth = (t, seen = new Set()) => {
    if (level.has(t.id)) return level.get(t.id);
    if (seen.has(t.id)) return 0;
    seen.add(t.id);
    const deps = (t.dep || []).filter((d) => d !== -1 && byId.has(d));
    const value = deps.length ? 1 + Math.max(...deps.map((d) => depth(byId.get(d), seen))) : 0;
    level.set(t.id, value);
    return value;
  };
  tasks.forEach((t) => depth(t));
  const columns = new Map();
  const pos = new Map();
  for (const t of tasks) {
    const col = level.get(t.id);
    const row = columns.get(col) || 0;
    columns.set(col, row + 1);
    pos.set(t.id, { x: 10 + col * 190, y: 10 + row * 56 });
  }
  const width = 10 + (Math.max(...columns.keys()) + 1) * 190;
  const height = 10 + Math.max(...columns.values()) * 56;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": "Plan: " + tasks.map((t) => `task ${t.id} ${t.task}`).join(", ") });
  for (const t of tasks) {
    for (const d of (t.dep || []).filter((d) => pos.has(d))) {
      const a = pos.get(d), b = pos.get(t.id);
      chart.append(svg("line", { x1: a.x + 160, y1: a.y + 20, x2: b.x, y2: b.y + 20 }));
    }
  }
  for (const t of tasks) {
    const p = pos.get(t.id);
    const g = svg("g", { "data-node": `t${t.id}`, "data-status": "pending" });
    g.append(svg("rect", { x: p.x, y: p.y, width: 160, height: 40, rx: 8 }));
    const label = svg("text", { x: p.x + 10, y: p.y + 25 });
    label.textContent = `t${t.id} · ${t.task}`.slice(0, 26);
    g.append(label);
    chart.append(g);
  }
  holder.append(chart);
}

function follow(runId, item) {
  const source = new EventSource(withKey(`/v1/runs/${runId}/events`));
  const on = (type, handler) => source.addEventListener(type, (event) => handler(JSON.parse(event.data)));
  on("plan_ready", (doc) => drawPlan(item, doc.plan));
  on("node_started", (doc) => setNode(item, doc.node, "running", 0, doc.tool));
  on("node_progress", (doc) => setNode(item, doc.node, "running", doc.total ? doc.step / doc.total : undefined));
  on("node_finished", (doc) => setNode(item, doc.node, "done"));
  on("node_cached", (doc) => setNode(item, doc.node, "cached"));
  on("node_failed", (doc) => setNode(item, doc.node, "failed"));
  on("node_skipped", (doc) => setNode(item, doc.node, "skipped"));
  on("span_dispatched", (doc) => setNode(item, `${doc.kind || "span"} ${Number(doc.index || 0) + 1}`, "running", 0));
  on("span_finished", (doc) => setNode(item, `${doc.kind || "span"} ${Number(doc.index || 0) + 1}`,
    doc.error ? "failed" : "done"));
  on("end", () => source.close());
  source.onerror = () => { if (item.dataset.status !== "running") source.close(); };
  return source;
}

// ------------------------------------------------------------------ sending
async function readStream(response, onChunk) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) !== -1) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data && data !== "[DONE]") onChunk(JSON.parse(data));
      }
    }
  }
}

async function send(event) {
  event?.preventDefault();
  const text = $("#prompt").value.trim();
  if (state.busy || (!text && !state.attachments.length)) return;
  state.busy = true;
  $("#send").disabled = true;
  const userItem = addMessage("user", "You");
  renderText(userItem.querySelector(".text"), text);
  const parts = text ? [{ type: "text", text }] : [];
  const assistant = addMessage("assistant", $("#model").value);
  const textNode = assistant.querySelector(".text");
  let answer = "";
  let source = null;
  try {
    for (const item of state.attachments) {
      const ref = await upload(item.file);
      addMedia(userItem.querySelector(".media"), { ...ref, name: item.file.name });
      const kind = `${ref.modality}_url`;
      parts.push({ type: kind, [kind]: { url: ref.url } });
    }
    state.attachments = [];
    renderAttachments();
    $("#prompt").value = "";
    state.messages.push({ role: "user", content: parts.length === 1 && parts[0].type === "text" ? text : parts });
    const response = await api("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: $("#model").value, stream: true, messages: state.messages }),
    });
    if (!response.ok) throw new Error(await errorText(response));
    const runId = response.headers.get("X-Run-Id");
    if (runId) {
      assistant.dataset.run = runId;
      assistant.querySelector(".who").append(el("span", { class: "run-id", text: `run …${runId.slice(-8)}` }));
      source = follow(runId, assistant);
    }
    let failed = null;
    await readStream(response, (chunk) => {
      if (chunk.error) { failed = chunk.error.message; return; }
      const choice = (chunk.choices || [])[0];
      if (!choice) return;
      if (choice.delta && choice.delta.content) {
        answer += choice.delta.content;
        renderText(textNode, answer);
        for (const image of imageLinks(answer)) addMedia(assistant.querySelector(".media"), image);
        assistant.scrollIntoView({ block: "end" });
      }
      for (const artifact of chunk.artifacts || []) addMedia(assistant.querySelector(".media"), artifact);
    });
    if (failed) throw new Error(failed);
    state.messages.push({ role: "assistant", content: answer });
    assistant.dataset.status = "done";
  } catch (error) {
    assistant.dataset.status = "failed";
    textNode.append(el("p", { class: "error", role: "alert", text: `Error: ${error.message}` }));
    if (state.messages.length && state.messages[state.messages.length - 1].role === "user") state.messages.pop();
  } finally {
    state.busy = false;
    $("#send").disabled = false;
    setTimeout(() => source && source.close(), 3000);
    refreshRuns();
    $("#prompt").focus();
  }
}

$("#composer").addEventListener("submit", send);
$("#prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) send(event);
});
$("#new-chat").addEventListener("click", () => {
  state.messages = [];
  $("#log").replaceChildren();
  $("#prompt").focus();
});

// ------------------------------------------------------------------ runs and gallery
function describe(run) {
  const r = run.request || {};
  return r.prompt || r.endpoint || r.graph || r.workflow || r.model || run.kind;
}

async function refreshRuns() {
  let doc;
  try {
    const response = await api("/v1/runs?limit=25");
    if (!response.ok) return;
    doc = await response.json();
  } catch (_) {
    return;
  }
  const list = $("#run-list");
  const gallery = $("#gallery");
  list.replaceChildren();
  gallery.replaceChildren();
  const seen = new Set();
  for (const run of doc.runs || []) {
    const when = new Date(run.created_at * 1000).toLocaleTimeString();
    list.append(el("li", { "data-run": run.id },
      el("span", { class: "what", title: describe(run), text: `${when} · ${run.kind} · ${describe(run)}` }),
      el("span", { class: `badge ${run.status}`, text: run.status })));
    for (const [name, artifact] of Object.entries(run.outputs || {})) {
      if (!artifact || !artifact.id || seen.has(artifact.id)) continue;
      seen.add(artifact.id);
      if (artifact.modality === "image") {
        gallery.append(el("a", { href: artifact.url, target: "_blank", title: `${name} · run …${run.id.slice(-8)}` },
          el("img", { src: artifact.url, alt: `${name} from run …${run.id.slice(-8)}`, loading: "lazy" })));
      } else if (artifact.modality === "audio" || artifact.modality === "video") {
        gallery.append(el("div", { class: "tile" }, el("div", { text: `${name} · run …${run.id.slice(-8)}` }),
          el(artifact.modality, { src: artifact.url, controls: "", preload: "none" })));
      }
    }
  }
}

$("#refresh-runs").addEventListener("click", refreshRuns);
if (state.key) $("#api-key").value = state.key;
probe();
