"""Server hardening, against real ``orchestrator serve`` processes: store faults end runs,
bombs stop at the edge, the HTTP edge answers 4xx to client mistakes."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from server_proc import ROOT, ServerProcess, free_port
from media_factory import silent_flac
from test_hardening import _nested_doc
from test_server_api import png_bytes, sleep_wf, submit, wait_run, wav_bytes

from orchestrator._redis_server import PrivateRedis
from orchestrator.artifacts import LocalArtifactStore
from orchestrator.errors import StoreUnavailable
from orchestrator.server import ServerSettings


def _wait_status(http: httpx.Client, path: str, status: int, timeout: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = http.get(path)
        if r.status_code == status or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


# ---------------------------------------------------------------------- store faults
@pytest.mark.slow
def test_redis_restart_ends_inflight_runs_and_the_server_recovers() -> None:
    one_worker = {"ORCHESTRATOR_MAX_CONCURRENT_RUNS": "1"}  # a worker killed by the fault would leave none
    with PrivateRedis() as redis_server, ServerProcess(redis_url=redis_server.url, env=one_worker) as srv, \
            srv.client() as http:
        run = submit(http, {"workflow": sleep_wf(2.0), "inputs": {"text": "hi"}})
        assert wait_status_of(http, run["id"], "running")
        port = redis_server.port
        redis_server.stop()

        ready = _wait_status(http, "/readyz", 503)
        assert ready.status_code == 503, ready.text
        assert "Redis" not in ready.text and str(port) not in ready.text  # nothing internal on an open route
        assert http.post("/v1/runs", json={"workflow": sleep_wf(0), "inputs": {"text": "x"}}).status_code == 503

        done = wait_run(http, run["id"], timeout=30)  # the in-flight run ends, with the reason
        assert done["status"] == "failed", done
        assert "unavailable" in str(done["error"]).lower(), done["error"]
        stream = http.get(f"/v1/runs/{run['id']}/events", headers={"Accept": "text/event-stream"})
        assert stream.status_code == 200 and "event: error" in stream.text  # ends cleanly, not a broken connection

        redis_server.start(port=port)  # back, empty
        assert _wait_status(http, "/readyz", 200).status_code == 200
        again = submit(http, {"workflow": sleep_wf(0), "inputs": {"text": "again"}})
        final = wait_run(http, again["id"])
        assert final["status"] == "succeeded", final
        assert final["outputs"]["result"]
        # the failed run's final state reaches the restarted store too (the heartbeat saves it)
        deadline = time.monotonic() + 20
        while (old := http.get(f"/v1/runs/{run['id']}")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert old.status_code == 200 and old.json()["status"] == "failed"


def wait_status_of(http: httpx.Client, run_id: str, status: str, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc: dict[str, Any] = http.get(f"/v1/runs/{run_id}").json()
        if doc["status"] == status:
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------- the HTTP edge
MAX_PROMPT = 2000


@pytest.fixture(scope="module")
def edge(redis_url: str) -> Any:
    env = {"ORCHESTRATOR_HEADER_TIMEOUT_SECONDS": "1.0", "ORCHESTRATOR_MAX_HEADER_BYTES": str(16 << 10),
           "ORCHESTRATOR_MAX_PROMPT_CHARS": str(MAX_PROMPT)}
    with ServerProcess(redis_url=redis_url, env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(edge: ServerProcess) -> Any:
    with edge.client() as client:
        yield client


def _raw(port: int, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:  # the server closed while we were still sending
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
    return b"".join(chunks)


def test_a_client_sending_its_headers_slowly_is_disconnected(edge: ServerProcess) -> None:
    socks = []
    started = time.monotonic()
    try:
        for _ in range(20):  # a small slowloris: every connection must be dropped on its own
            s = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        for s in socks:
            for _ in range(3):
                try:
                    s.sendall(b"X-a: b\r\n")
                except OSError:
                    break
                time.sleep(0.1)
        for s in socks:
            assert s.recv(1024) == b""  # closed by the server (a timeout would raise instead)
        assert time.monotonic() - started < 9
    finally:
        for s in socks:
            s.close()
    # an ordinary request is still answered
    assert httpx.get(edge.url("/healthz")).status_code == 200


def test_oversized_request_heads_are_refused(edge: ServerProcess) -> None:
    for size in (97 << 10, 16 << 20):
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
        answer = _raw(edge.port, head)
        if size > 1 << 20 and answer == b"":
            continue  # the server closed while 16 MiB were still on their way: the reset may eat the 431
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b"max_header_bytes" in answer
    ok = _raw(edge.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Small: " + b"a" * 1000 + b"\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200"), ok[:200]


def _responses(sock: socket.socket, count: int) -> list[bytes]:
    """Read ``count`` whole responses (Content-Length or chunked bodies) from a keep-alive connection."""
    data, out = b"", []
    while len(out) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].lower()
            if b"transfer-encoding: chunked" in head:
                end = data.find(b"\r\n0\r\n\r\n", head_end)
                size = end + 7 - head_end - 4 if end >= 0 else -1
            else:
                size = int(head.partition(b"content-length:")[2].split(b"\r\n")[0] or 0)
            if 0 <= size <= len(data) - head_end - 4:
                out.append(data[:head_end + 4 + size])
                data = data[head_end + 4 + size:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {len(out)} of {count} responses"
        data += chunk
    return out


def test_keep_alive_connections_serve_pipelined_requests_and_streams_longer_than_the_head_timeout(
        edge: ServerProcess, http: httpx.Client) -> None:
    run = submit(http, {"workflow": sleep_wf(1.6), "inputs": {"text": "slow"}})  # outlives the 1 s head timeout
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 2)  # pipelined
        assert [r[:15] for r in _responses(sock, 2)] == [b"HTTP/1.1 200 OK"] * 2
        sock.sendall(f"GET /v1/runs/{run['id']}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        (stream,) = _responses(sock, 1)
        assert b"event: end" in stream and b'"status":"succeeded"' in stream
        time.sleep(0.3)  # idle, but under the head timeout: the connection stays open
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8000 + b"\r\n\r\n")
        assert _responses(sock, 1)[0].startswith(b"HTTP/1.1 200")
        time.sleep(1.5)  # idle past the head timeout: closed
        assert sock.recv(1024) == b""


def test_an_oversized_head_after_a_request_on_the_same_connection_is_refused(edge: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _responses(sock, 1)[0].startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (17 << 10))
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 431") and b"max_header_bytes" in answer


def test_tool_filters_with_unknown_modalities_are_422(http: httpx.Client) -> None:
    for query in ("input_modality=bogus", "output_modality=null"):
        r = http.get(f"/v1/tools?{query}")
        assert r.status_code == 422, r.text
        assert "modality" in r.json()["error"]["message"]
    found = http.get("/v1/tools?input_modality=audio&output_modality=text").json()["tools"]
    assert found and all(any(p["modality"] == "audio" for p in t["inputs"]) for t in found)


@pytest.mark.parametrize("url", ["http://127.0.0.1/x.png", "http://0x7f000001/x.png",
                                 "http://169.254.169.254/latest/meta-data"])
def test_urls_refused_by_the_address_policy_are_the_clients_error(http: httpx.Client, url: str) -> None:
    body = {"model": "orchestrator",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "what is in this picture?"},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 422, r.text
    assert "refused" in r.json()["error"]["message"]
    r = http.post("/v1/runs", json={"prompt": "describe the picture", "inputs": {"photo.png": {"url": url}}})
    assert r.status_code == 422, r.text


def test_last_event_id_is_validated(http: httpx.Client) -> None:
    run = submit(http, {"workflow": sleep_wf(0), "inputs": {"text": "ids"}})
    assert wait_run(http, run["id"])["status"] == "succeeded"
    path = f"/v1/runs/{run['id']}/events"
    for bad in ("-3", "abc", "1e3"):
        r = http.get(path, headers={"Last-Event-ID": bad, "Accept": "text/event-stream"})
        assert r.status_code == 400, (bad, r.text)
    for past in ("100", "9" * 40):
        r = http.get(path, headers={"Last-Event-ID": past, "Accept": "text/event-stream"})
        assert r.status_code == 200
        events = [line for line in r.text.splitlines() if line.startswith("event:")]
        assert events == ["event: end"], r.text
    replay = http.get(path, headers={"Last-Event-ID": "1", "Accept": "text/event-stream"}).text
    ids = [int(line[3:]) for line in replay.splitlines() if line.startswith("id:")]
    assert ids and min(ids) == 2


def test_uploads_whose_declared_type_disagrees_with_the_bytes_are_422(http: httpx.Client) -> None:
    for data, declared, detected in ((png_bytes(), "audio/wav", "image"), (wav_bytes(), "image/png", "audio")):
        r = http.post("/v1/artifacts", content=data, headers={"Content-Type": declared})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["declared"] == declared and error["detected"] == detected
        assert declared in error["message"]
        r = http.post("/v1/artifacts", files={"file": ("x.bin", data, declared)})
        assert r.status_code == 422, r.text
    bad_input = {"prompt": "describe the picture",
                 "inputs": {"photo": {"url": "data:audio/wav;base64," + base64.b64encode(png_bytes()).decode()}}}
    r = http.post("/v1/runs", json=bad_input)
    assert r.status_code == 422 and "audio/wav" in r.json()["error"]["message"], r.text
    for generic in ("application/octet-stream", None):  # not a disagreement
        headers = {"Content-Type": generic} if generic else {}
        r = http.post("/v1/artifacts", content=png_bytes(), headers=headers)
        assert r.status_code == 201 and r.json()["modality"] == "image", r.text


def test_prompts_over_the_limit_are_413_naming_it(http: httpx.Client) -> None:
    long = "Generate an image of a red fox in the snow. " * 100
    assert len(long) > MAX_PROMPT
    r = http.post("/v1/runs", json={"prompt": long})
    assert r.status_code == 413 and "max_prompt_chars" in r.json()["error"]["message"], r.text
    r = http.post("/v1/chat/completions", json={"model": "orchestrator", "messages": [{"role": "user", "content": long}]})
    assert r.status_code == 413 and "max_prompt_chars" in r.json()["error"]["message"], r.text


def test_nested_workflow_bombs_are_refused_at_once(http: httpx.Client) -> None:
    started = time.monotonic()
    r = http.post("/v1/runs", json={"workflow": _nested_doc(16, 3), "inputs": {"text": "boom"}})
    assert r.status_code == 422 and "max_workflow_nodes" in r.text, r.text
    assert time.monotonic() - started < 5


def test_open_routes_reveal_nothing_internal(edge: ServerProcess, http: httpx.Client) -> None:
    for path in ("/readyz", "/healthz"):
        r = http.get(path)
        assert r.status_code == 200
        for secret in (edge.prefix, "Redis", edge.data_dir, socket.gethostname(), str(edge.proc.pid if edge.proc else os.getpid())):
            assert secret not in r.text, (path, secret, r.text)


@pytest.mark.slow
def test_an_empty_or_blank_api_key_is_a_configuration_error(tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env["ORCHESTRATOR_DATA_DIR"] = str(tmp_path)
    for key, host in (("", "0.0.0.0"), ("   ", "127.0.0.1")):
        out = subprocess.run([sys.executable, "-m", "orchestrator", "serve", "--host", host, "--port",
                              str(free_port()), "--api-key", key], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode != 0
        assert "empty or blank" in out.stdout + out.stderr
    with pytest.raises(ValueError, match="empty or blank"):
        ServerSettings(api_keys=["good", " "])
    env["ORCHESTRATOR_API_KEYS"] = '["  "]'
    out = subprocess.run([sys.executable, "-m", "orchestrator", "serve", "--port", str(free_port())], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "empty or blank" in out.stdout + out.stderr


def test_media_bombs_are_413_naming_the_limit(http: httpx.Client) -> None:
    r = http.post("/v1/artifacts", content=silent_flac(8, 96_000, 60), headers={"Content-Type": "audio/flac"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["limit"] == "max_audio_samples"


@pytest.fixture
def small_disk(tmp_path: Any) -> Any:
    """A 16 MiB tmpfs: a disk that can really fill up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Any) -> Any:
    """Fill the file system holding ``folder``; returns the filler file (delete it to free the space)."""
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                continue
    return filler


@pytest.mark.slow
def test_disk_full_under_the_embedded_store_fails_runs_and_damages_nothing(small_disk: Any) -> None:
    data_dir = small_disk / "data"
    with ServerProcess(env={"ORCHESTRATOR_DATA_DIR": str(data_dir), "ORCHESTRATOR_LEASE_SECONDS": "1.5"}) as srv, \
            srv.client() as http:
        before = submit(http, {"workflow": sleep_wf(0), "inputs": {"text": "kept safe"}})
        before_done = wait_run(http, before["id"])
        assert before_done["status"] == "succeeded"
        kept_id = before_done["outputs"]["result"]["id"]
        events_before = http.get(f"/v1/runs/{before['id']}/events", headers={"Accept": "application/json"}).json()

        run = submit(http, {"workflow": sleep_wf(1.5), "inputs": {"text": "doomed"}})
        assert wait_status_of(http, run["id"], "running")
        filler = _fill(small_disk)

        done = wait_run(http, run["id"], timeout=30)  # ends, with the reason
        assert done["status"] == "failed", done
        assert "No space left on device" in json.dumps(done["error"]) + json.dumps(done["errors"]), done
        r = http.post("/v1/runs", json={"workflow": sleep_wf(0), "inputs": {"text": "no room"}})
        assert r.status_code == 503, r.text  # refused, not queued for ever

        # nothing already stored is damaged
        assert http.get(f"/v1/artifacts/{kept_id}").content == b"kept safe"
        assert http.get(f"/v1/runs/{before['id']}").json()["status"] == "succeeded"
        again = http.get(f"/v1/runs/{before['id']}/events", headers={"Accept": "application/json"}).json()
        assert again == events_before

        filler.unlink()  # room again: the server carries on
        later = submit(http, {"workflow": sleep_wf(0), "inputs": {"text": "room again"}})
        assert wait_run(http, later["id"])["status"] == "succeeded"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the failed run's final state reaches the disk too
            stored = json.loads((data_dir / "artifacts" / "records" / "runs" / f"{run['id']}.json").read_text())
            if stored["value"]["status"] == "failed":
                break
            time.sleep(0.2)
        assert stored["value"]["status"] == "failed"


def test_a_fresh_server_under_concurrent_runs_knows_every_builtin_tool(redis_url: str) -> None:
    """The first requests race the tool registry's first load; none may see an unknown tool."""
    wf = {"name": "race", "inputs": [{"name": "text", "modality": "text"}],
          "nodes": [{"id": "t", "tool": "text.template", "params": {"template": "<{text}>"}, "inputs": {"texts": "text"}}],
          "outputs": [{"name": "result", "source": "t.text"}]}
    with ServerProcess(redis_url=redis_url, env={"ORCHESTRATOR_MAX_QUEUED_RUNS": "100"}) as srv, \
            httpx.Client(base_url=srv.base_url, timeout=60, limits=httpx.Limits(max_connections=50)) as http:
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda i: http.post("/v1/runs", json={"workflow": wf, "inputs": {"text": str(i)}}),
                                    range(50)))
        assert [r.status_code for r in answers] == [202] * 50, [r.text for r in answers if r.status_code != 202][:2]
        for r in answers[:5]:
            assert wait_run(http, r.json()["id"])["status"] == "succeeded"


def test_an_event_append_cut_short_by_a_full_disk_leaves_the_log_whole(small_disk: Any) -> None:
    store = LocalArtifactStore(small_disk / "artifacts")
    for i in range(3):
        store.append_event("run:x", {"type": "step", "i": i})
    filler = _fill(small_disk)
    with pytest.raises(StoreUnavailable, match="No space left"):
        for i in range(3, 1000):  # the log's last page has some room: fill it, then cut an event short
            store.append_event("run:x", {"type": "step", "i": i, "pad": "x" * 3000})
    events = store.read_events("run:x")
    assert [doc["i"] for _, doc in events] == list(range(len(events)))  # every line whole, none half-written
    assert (small_disk / "artifacts" / "events" / "run%3Ax.jsonl").read_bytes().endswith(b"\n")
    filler.unlink()
    assert store.append_event("run:x", {"type": "after"}) == len(events) + 1


@pytest.mark.slow
def test_a_chat_whose_url_fails_when_fetched_is_the_clients_error(redis_url: str) -> None:
    """The address policy passes (private URLs allowed here), but the server behind the URL sends
    a page, not an image: the completion is a 4xx naming why, not a 500."""
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = b"<html>not a picture</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/photo.png"
    try:
        with ServerProcess(redis_url=redis_url, env={"ORCHESTRATOR_ALLOW_PRIVATE_URLS": "true"}) as srv, \
                srv.client() as http:
            body = {"model": "orchestrator",
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "what is in this picture?"},
                                                              {"type": "image_url", "image_url": {"url": url}}]}]}
            r = http.post("/v1/chat/completions", json=body)
            assert r.status_code == 422, r.text
            error = r.json()["error"]
            assert error["type"] == "DownloadError" and error["code"] == 422 and "Content-Type" in error["message"]
    finally:
        httpd.shutdown()
        httpd.server_close()
