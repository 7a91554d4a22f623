"""The REST server as a real uvicorn process against real Redis: runs, events, artifacts, catalog, ops."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from server_proc import ServerProcess

from orchestrator.artifacts import Audio, Limits, RedisArtifactStore, decode, encode

MAX_UPLOAD = 200_000


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[ServerProcess]:
    env = {"ORCHESTRATOR_MAX_UPLOAD_BYTES": str(MAX_UPLOAD), "ORCHESTRATOR_MAX_BODY_BYTES": str(400_000),
           "ORCHESTRATOR_MAX_CONCURRENT_RUNS": "3"}
    with ServerProcess(redis_url=redis_url, env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture
def store(server: ServerProcess, redis_url: str) -> Iterator[RedisArtifactStore]:
    """The server's store, opened beside it (same Redis, same prefix)."""
    s = RedisArtifactStore(redis_url, prefix=server.prefix, limits=Limits())
    yield s
    s.close()


# ---------------------------------------------------------------------- helpers
def workflow(*nodes: dict[str, Any], outputs: dict[str, str], inputs: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": "test",
        "inputs": [{"name": n, "modality": m} for n, m in (inputs or {"text": "text"}).items()],
        "nodes": list(nodes),
        "outputs": [{"name": k, "source": v} for k, v in outputs.items()],
    }


STEPS_WF = workflow(
    {"id": "shout", "tool": "testsrv.steps", "params": {"steps": 3}, "inputs": {"text": "text"}},
    {"id": "wrap", "tool": "text.template", "params": {"template": "<{text}>"}, "inputs": {"texts": "shout.text"}},
    outputs={"result": "wrap.text"},
)


def sleep_wf(seconds: float) -> dict[str, Any]:
    return workflow({"id": "nap", "tool": "testsrv.sleep", "params": {"seconds": seconds}, "inputs": {"text": "text"}},
                    outputs={"result": "nap.text"})


def submit(http: httpx.Client, body: dict[str, Any], expect: int = 202) -> dict[str, Any]:
    r = http.post("/v1/runs", json=body)
    assert r.status_code == expect, r.text
    return r.json()


def wait_run(http: httpx.Client, run_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = http.get(f"/v1/runs/{run_id}").json()
        if doc["status"] not in ("queued", "running"):
            return doc
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish: {doc}")


def wait_running(http: httpx.Client, run_id: str, timeout: float = 10) -> None:
    """Until the run is running (or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while http.get(f"/v1/runs/{run_id}").json()["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)


def read_sse(http: httpx.Client, path: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every SSE message of a stream until it closes: {"id", "event", "data"}."""
    messages: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with http.stream("GET", path, headers={"Accept": "text/event-stream", **(headers or {})}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line == "":
                if "data" in current:
                    current["data"] = json.loads(current["data"])
                    messages.append(current)
                current = {}
            elif line.startswith(":") or line.startswith("retry:"):
                continue
            else:
                field, _, value = line.partition(":")
                current[field] = value[1:] if value.startswith(" ") else value
    return messages


def wav_bytes(seconds: float = 0.5, rate: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    data, _ = encode(Audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate))
    return data


def png_bytes(w: int = 24, h: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------- ops and catalog
def test_health_ready_openapi(http: httpx.Client) -> None:
    assert http.get("/healthz").json()["status"] == "ok"
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    schema = http.get("/openapi.json").json()
    for path in ("/v1/runs", "/v1/runs/{run_id}/events", "/v1/artifacts", "/v1/artifacts/{artifact_id}",
                 "/v1/chat/completions", "/v1/models", "/v1/tools", "/v1/graphs"):
        assert path in schema["paths"], path


def test_catalog(http: httpx.Client) -> None:
    tools = {t["name"]: t for t in http.get("/v1/tools").json()["tools"]}
    assert "text.template" in tools and "testsrv.sleep" in tools
    template = tools["text.template"]
    assert template["task"] == "text-template"
    assert template["outputs"][0]["modality"] == "text"
    assert "template" in template["params_schema"]["properties"]
    only = http.get("/v1/tools", params={"task": "text-to-speech"}).json()["tools"]
    assert only and all(t["task"] == "text-to-speech" for t in only)
    assert http.get("/v1/tools/no.such.tool").status_code == 404
    graphs = http.get("/v1/graphs").json()["graphs"]
    assert graphs and all({"name", "inputs", "outputs"} <= set(g) for g in graphs)
    one = http.get(f"/v1/graphs/{graphs[0]['name']}").json()
    assert one["workflow"]["nodes"]
    assert http.get("/v1/graphs/nope").status_code == 404


# ---------------------------------------------------------------------- runs and events
def test_workflow_run_outputs_and_download(http: httpx.Client) -> None:
    created = submit(http, {"workflow": STEPS_WF, "inputs": {"text": "hello"}})
    assert created["status"] == "queued" and created["kind"] == "workflow"
    done = wait_run(http, created["id"])
    assert done["status"] == "succeeded", done
    out = done["outputs"]["result"]
    assert out["modality"] == "text" and out["url"].endswith(out["id"])
    assert httpx.get(out["url"]).text == "<HELLO>"
    assert done["nodes"]["shout"]["status"] == "succeeded" and done["nodes"]["shout"]["tool"] == "testsrv.steps"
    assert done["inputs"]["text"]["modality"] == "text"
    listed = [r["id"] for r in http.get("/v1/runs", params={"limit": 100}).json()["runs"]]
    assert created["id"] in listed


def test_a_list_output_port_becomes_numbered_outputs(http: httpx.Client) -> None:
    """A ``many`` output (several artifacts) finishes the run: ``words``, ``words_2`` … each a downloadable view."""
    run = submit(http, {"workflow": workflow({"id": "cut", "tool": "testsrv.split", "inputs": {"text": "text"}},
                                             outputs={"words": "cut.words"}), "inputs": {"text": "red green blue"}})
    done = wait_run(http, run["id"])
    assert done["status"] == "succeeded", done
    assert sorted(done["outputs"]) == ["words", "words_2", "words_3"]
    assert [httpx.get(done["outputs"][k]["url"]).text for k in ("words", "words_2", "words_3")] == [
        "red", "green", "blue"]
    assert [r["id"] for r in done["nodes"]["cut"]["outputs"]["words"]] == [
        done["outputs"][k]["id"] for k in ("words", "words_2", "words_3")]


def test_events_in_order_and_resume(http: httpx.Client) -> None:
    run = submit(http, {"workflow": STEPS_WF, "inputs": {"text": "sse"}})
    messages = read_sse(http, f"/v1/runs/{run['id']}/events")
    events, end = messages[:-1], messages[-1]
    assert end["event"] == "end" and end["data"]["status"] == "succeeded" and "id" not in end
    types = [m["event"] for m in events]
    assert types == ["run_started", "node_started", "node_progress", "node_progress", "node_progress",
                     "node_finished", "node_started", "node_finished", "run_finished"]
    ids = [int(m["id"]) for m in events]
    assert ids == list(range(1, len(events) + 1))
    assert [m["data"]["type"] for m in events] == types
    assert [m["data"]["step"] for m in events if m["event"] == "node_progress"] == [1, 2, 3]
    assert events[-1]["data"]["outputs"]["result"]["modality"] == "text"
    # resume after event 4: exactly the rest, identical
    resumed = read_sse(http, f"/v1/runs/{run['id']}/events", headers={"Last-Event-ID": "4"})
    assert [int(m["id"]) for m in resumed[:-1]] == ids[4:]
    assert [m["data"] for m in resumed[:-1]] == [m["data"] for m in events[4:]]
    assert resumed[-1]["event"] == "end"
    after = read_sse(http, f"/v1/runs/{run['id']}/events?after={len(events)}")
    assert [m["event"] for m in after] == ["end"]
    as_json = http.get(f"/v1/runs/{run['id']}/events", headers={"Accept": "application/json"}).json()["events"]
    assert [e["id"] for e in as_json] == ids


def test_events_stream_live(http: httpx.Client) -> None:
    """Events arrive while the run is still going, not only at the end."""
    run = submit(http, {"workflow": workflow(
        {"id": "slow", "tool": "testsrv.steps", "params": {"steps": 4, "delay": 0.25}, "inputs": {"text": "text"}},
        outputs={"result": "slow.text"}), "inputs": {"text": "live"}})
    seen: list[tuple[str, float]] = []
    with http.stream("GET", f"/v1/runs/{run['id']}/events") as r:
        for line in r.iter_lines():
            if line.startswith("event:"):
                seen.append((line[7:], time.monotonic()))
    progress_times = [t for e, t in seen if e == "node_progress"]
    assert len(progress_times) == 4
    assert progress_times[-1] - progress_times[0] > 0.5  # spread out: delivered live
    assert seen[-1][0] == "end"


def test_failing_node_is_reported(http: httpx.Client) -> None:
    run = submit(http, {"workflow": workflow(
        {"id": "bad", "tool": "testsrv.fail", "inputs": {"text": "text"}},
        {"id": "good", "tool": "text.template", "params": {"template": "ok {text}"}, "inputs": {"texts": "text"}},
        outputs={"bad": "bad.text", "good": "good.text"}), "inputs": {"text": "x"}})
    done = wait_run(http, run["id"])
    assert done["status"] == "partial"
    assert "good" in done["outputs"] and "bad" not in done["outputs"]
    assert "refusing" in done["errors"]["bad"]
    assert done["nodes"]["bad"]["status"] == "failed"


@pytest.mark.parametrize("body, needle", [
    ({"workflow": workflow({"id": "a", "tool": "no.such", "inputs": {"text": "text"}}, outputs={"o": "a.text"}),
      "inputs": {"text": "x"}}, "no.such"),
    ({"workflow": STEPS_WF, "inputs": {}}, "missing input"),
    ({"workflow": STEPS_WF, "inputs": {"text": "x", "extra": "y"}}, "unknown input"),
    ({"workflow": STEPS_WF, "inputs": {"text": "sha256:" + "0" * 64}}, "no such artifact"),
    ({"workflow": STEPS_WF, "inputs": {"text": {"base64": "@@@"}}}, "base64"),
    ({"graph": "no-such-graph", "inputs": {}}, "no-such-graph"),
    ({"prompt": "x", "graph": "y"}, "exactly one"),
])
def test_bad_run_requests_are_422(http: httpx.Client, body: dict[str, Any], needle: str) -> None:
    r = http.post("/v1/runs", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert needle in json.dumps(error)


def test_inputs_inline_base64_and_data_url(http: httpx.Client) -> None:
    png = png_bytes(30, 20)
    wf = workflow({"id": "gray", "tool": "image.grayscale", "inputs": {"image": "photo"}},
                  outputs={"image": "gray.image"}, inputs={"photo": "image"})
    for value in ({"base64": base64.b64encode(png).decode()},
                  {"url": "data:image/png;base64," + base64.b64encode(png).decode()}):
        done = wait_run(http, submit(http, {"workflow": wf, "inputs": {"photo": value}})["id"])
        assert done["status"] == "succeeded", done
        img = decode(httpx.get(done["outputs"]["image"]["url"]).content, "image")
        assert img.size == (30, 20)
    bad = http.post("/v1/runs", json={"workflow": wf, "inputs": {"photo": {"base64": base64.b64encode(b"not a png").decode()}}})
    assert bad.status_code == 422


def test_cancel_running_run(http: httpx.Client) -> None:
    run = submit(http, {"workflow": sleep_wf(30), "inputs": {"text": "zz"}})
    wait_running(http, run["id"])
    started = time.monotonic()
    r = http.delete(f"/v1/runs/{run['id']}")
    assert r.status_code in (200, 202)
    done = wait_run(http, run["id"], timeout=10)
    assert done["status"] == "cancelled" and done["cancel_requested"]
    assert time.monotonic() - started < 8
    events = read_sse(http, f"/v1/runs/{run['id']}/events")
    assert events[-2]["event"] == "run_failed" and events[-2]["data"]["status"] == "cancelled"
    assert events[-1]["data"]["status"] == "cancelled"
    assert http.delete(f"/v1/runs/{run['id']}").status_code == 409
    assert http.get("/v1/runs/" + "f" * 24).status_code == 404


# ---------------------------------------------------------------------- artifacts
def test_upload_download_and_range(http: httpx.Client) -> None:
    wav = wav_bytes()
    r = http.post("/v1/artifacts", files={"file": ("tone.wav", wav, "audio/wav")})
    assert r.status_code == 201, r.text
    ref = r.json()
    assert ref["modality"] == "audio" and ref["mime"] == "audio/wav" and ref["size"] == len(wav)
    assert ref["meta"]["sample_rate"] == 8000 and abs(ref["meta"]["duration"] - 0.5) < 1e-6
    url = f"/v1/artifacts/{ref['id']}"
    full = http.get(url)
    assert full.status_code == 200 and full.content == wav
    assert full.headers["content-type"] == "audio/wav" and full.headers["accept-ranges"] == "bytes"
    part = http.get(url, headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == wav[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(wav)}"
    assert part.headers["content-length"] == "90"
    tail = http.get(url, headers={"Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.content == wav[-16:]
    assert tail.headers["content-range"] == f"bytes {len(wav) - 16}-{len(wav) - 1}/{len(wav)}"
    rest = http.get(url, headers={"Range": f"bytes={len(wav) - 5}-"})
    assert rest.status_code == 206 and rest.content == wav[-5:]
    beyond = http.get(url, headers={"Range": "bytes=5-999999999"})
    assert beyond.status_code == 206 and beyond.content == wav[5:]
    unsat = http.get(url, headers={"Range": f"bytes={len(wav) + 10}-"})
    assert unsat.status_code == 416 and unsat.headers["content-range"] == f"bytes */{len(wav)}"
    head = http.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(wav)) and head.content == b""
    cached = http.get(url, headers={"If-None-Match": full.headers["etag"]})
    assert cached.status_code == 304
    meta = http.get(url + "/meta").json()
    assert meta["id"] == ref["id"] and meta["url"].endswith(ref["id"])
    bare = http.get(f"/v1/artifacts/{ref['id'][7:]}")
    assert bare.content == wav
    assert http.get("/v1/artifacts/../../etc/passwd").status_code == 404
    assert http.get("/v1/artifacts/sha256:" + "a" * 64).status_code == 404


def test_raw_body_upload_and_conversion(http: httpx.Client) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), (1, 2, 3)).save(buf, format="JPEG")
    r = http.post("/v1/artifacts", content=buf.getvalue(), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 201, r.text
    ref = r.json()
    assert ref["mime"] == "image/png" and ref["meta"]["width"] == 20  # converted to the canonical PNG
    assert http.get(f"/v1/artifacts/{ref['id']}").content[:4] == b"\x89PNG"
    text = http.post("/v1/artifacts?modality=text", content="héllo".encode(), headers={"Content-Type": "text/plain"})
    assert text.status_code == 201 and http.get(f"/v1/artifacts/{text.json()['id']}").text == "héllo"


def test_oversize_and_corrupt_uploads_leave_the_store_alone(http: httpx.Client, store: RedisArtifactStore) -> None:
    before = set(store.ids())
    big = http.post("/v1/artifacts", files={"file": ("big.wav", b"RIFF" + b"\0" * (MAX_UPLOAD + 2_000_000), "audio/wav")})
    assert big.status_code == 413, big.text
    assert "limit" in big.json()["error"]["message"]
    raw_big = http.post("/v1/artifacts?modality=audio", content=b"\0" * (MAX_UPLOAD + 10))
    assert raw_big.status_code == 413
    png = png_bytes()
    truncated = http.post("/v1/artifacts", files={"file": ("x.png", png[: len(png) // 2], "image/png")})
    assert truncated.status_code == 422, truncated.text
    wrong = http.post("/v1/artifacts", files={"file": ("x.png", b"definitely not an image", "image/png")},
                      data={"modality": "image"})
    assert wrong.status_code == 422
    empty = http.post("/v1/artifacts", files={"file": ("e.wav", b"", "audio/wav")})
    assert empty.status_code == 422
    huge_json = http.post("/v1/runs", content=b"{" + b" " * 500_000 + b"}", headers={"Content-Type": "application/json"})
    assert huge_json.status_code == 413
    assert set(store.ids()) == before


def test_metrics(http: httpx.Client) -> None:
    wait_run(http, submit(http, {"workflow": STEPS_WF, "inputs": {"text": "metrics"}})["id"])
    wait_run(http, submit(http, {"workflow": STEPS_WF, "inputs": {"text": "metrics"}})["id"])  # cached
    text = http.get("/metrics").text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values['orchestrator_runs_finished_total{kind="workflow",status="succeeded"}'] >= 2
    assert values['orchestrator_node_seconds_count{tool="testsrv.steps"}'] >= 1
    assert values['orchestrator_node_cache_hits_total{tool="testsrv.steps"}'] >= 1
    assert "orchestrator_run_queue_depth" in values and "orchestrator_model_loads_total" in values


# ---------------------------------------------------------------------- the embedded default agent (heuristic)
def test_prompt_run_with_the_heuristic_planner(http: httpx.Client) -> None:
    run = submit(http, {"prompt": "Summarize this text: 'Redis keeps the runs. The server streams events. "
                                  "Clients resume with Last-Event-ID.'"})
    assert run["kind"] == "prompt"
    done = wait_run(http, run["id"])
    assert done["status"] == "succeeded", done
    assert done["answer"] and done["plan"]["tasks"][0]["task"] == "summarization"
    (name, out), = done["outputs"].items()
    assert out["modality"] == "text" and httpx.get(out["url"]).text in done["answer"]
    messages = read_sse(http, f"/v1/runs/{run['id']}/events")
    kinds = [m["event"] for m in messages]
    assert kinds[0] == "plan_ready" and "answer_delta" in kinds and kinds[-2:] == ["run_finished", "end"]
    assert messages[-2]["data"]["answer"] == done["answer"]


def test_a_refused_prompt_run_says_so(http: httpx.Client) -> None:
    run = submit(http, {"prompt": "How are you today, my friend?"})
    done = wait_run(http, run["id"])
    assert done["status"] == "refused" and done["outputs"] == {}, done
    assert done["refusals"] and "needs a language model" in done["refusals"][0]
    assert done["error"]["type"] == "Refused" and done["answer"].startswith("I cannot do this")
    messages = read_sse(http, f"/v1/runs/{run['id']}/events")
    assert messages[-2]["event"] == "run_failed" and messages[-2]["data"]["status"] == "refused"


def test_openai_client_against_the_heuristic_default(server: ServerProcess) -> None:
    import openai

    client = openai.OpenAI(base_url=server.url("/v1"), api_key="unused", max_retries=0)
    request = [{"role": "user", "content": "Summarize this text: 'The fox runs. The dog sleeps all day.'"}]
    completion = client.chat.completions.create(model="orchestrator", messages=request)
    text = completion.choices[0].message.content
    assert "summarization" in text and "dog" in text and completion.usage is not None and completion.usage.total_tokens > 0
    chunks = list(client.chat.completions.create(model="orchestrator", messages=request, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == text.strip()
    assert chunks[-1].choices[0].finish_reason == "stop"
