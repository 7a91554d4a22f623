"""Downloaders against a real HTTP server on loopback, and the address policy that guards them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

import tools.downloaders as dl
from orchestrator import Settings, ToolContext, get_tool
from orchestrator.artifacts import Modality, encode
from orchestrator.errors import DownloadError
from tools.downloaders import check_address, fetch

from media_factory import counter_video, gradient_image, tone

PNG = encode(gradient_image(40, 30), Modality.IMAGE)[0]
WAV = encode(tone(440, 0.5, 16000), Modality.AUDIO)[0]
MP4 = encode(counter_video(6, 6.0, 32, 32), Modality.VIDEO)[0]
HTML = b"""<!doctype html><html><head><title>Fox news</title><style>p{color:red}</style>
<script>alert('x')</script></head><body><h1>The fox</h1><p>The quick &amp; brown fox.</p><p>It jumps.</p></body></html>"""


def _jpeg() -> bytes:
    import io

    buf = io.BytesIO()
    gradient_image(40, 30).save(buf, format="JPEG")
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {
        "/img.png": (200, {"Content-Type": "image/png"}, PNG),
        "/photo.jpg": (200, {"Content-Type": "image/jpeg"}, _jpeg()),
        "/octet": (200, {"Content-Type": "application/octet-stream"}, PNG),
        "/tone.wav": (200, {"Content-Type": "audio/x-wav"}, WAV),
        "/clip.mp4": (200, {"Content-Type": "video/mp4"}, MP4),
        "/page.html": (200, {"Content-Type": "text/html; charset=utf-8"}, HTML),
        "/latin.txt": (200, {"Content-Type": "text/plain; charset=iso-8859-1"}, "café crème".encode("latin-1")),
        "/png-as-html": (200, {"Content-Type": "text/html"}, PNG),
        "/html-as-png": (200, {"Content-Type": "image/png"}, HTML),
        "/wav-as-png": (200, {"Content-Type": "image/png"}, WAV),
        "/declared-huge": (200, {"Content-Type": "image/png", "Content-Length": "999999999"}, PNG),
        "/missing": (404, {"Content-Type": "text/plain"}, b"nope"),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/to-ftp": (302, {"Location": "ftp://example.org/file.png"}, b""),
        "/truncated.png": (200, {"Content-Type": "image/png"}, PNG[: len(PNG) // 2]),
    }
    log: list[str] = []

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.log.append(self.path)
        if self.path == "/endless":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                self.wfile.write(PNG[:64])
                while True:  # no Content-Length, never ends: only a streaming cap stops it
                    self.wfile.write(b"\0" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                return
        if self.path == "/slow":
            time.sleep(1.5)
        if self.path.startswith("/chain/"):
            n = int(self.path.rsplit("/", 1)[1])
            status, headers, body = (302, {"Location": f"/chain/{n - 1}"}, b"") if n else self.routes["/img.png"]
        else:
            status, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


ALLOW = Settings(allow_private_urls=True)
DENY = Settings(allow_private_urls=False)


def tool_call(name: str, url: str, params: dict | None = None, settings: Settings = ALLOW) -> object:
    out = get_tool(name).call({"url": url}, params or {}, ToolContext(settings=settings))
    return next(iter(out.values()))


# ---------------------------------------------------------------- the four downloaders


def test_download_image_png_and_jpeg(server: str) -> None:
    assert tool_call("download.image", f"{server}/img.png").size == (40, 30)
    jpeg = tool_call("download.image", f"{server}/photo.jpg")
    assert jpeg.size == (40, 30) and np.asarray(jpeg.convert("RGB"))[0, -1, 0] > 200


def test_download_audio_and_video(server: str) -> None:
    audio = tool_call("download.audio", f"{server}/tone.wav")
    assert audio.sample_rate == 16000 and audio.duration == pytest.approx(0.5, abs=1e-3)
    video = tool_call("download.video", f"{server}/clip.mp4")
    assert video.frames.shape == (6, 32, 32, 3) and video.fps == pytest.approx(6.0)


def test_download_text_reduces_html_and_honours_charset(server: str) -> None:
    text = tool_call("download.text", f"{server}/page.html")
    assert text.splitlines()[0] == "Fox news"
    assert "The quick & brown fox." in text and "It jumps." in text
    assert "alert" not in text and "color" not in text
    assert "<h1>" in tool_call("download.text", f"{server}/page.html", {"html": "raw"})
    assert tool_call("download.text", f"{server}/latin.txt") == "café crème"


def test_url_is_found_inside_a_sentence(server: str) -> None:
    assert tool_call("download.image", f"Please download {server}/img.png for me.").size == (40, 30)
    with pytest.raises(DownloadError, match="one http"):
        tool_call("download.image", "no url here")


def test_generic_content_type_is_judged_by_the_bytes(server: str) -> None:
    assert fetch(f"{server}/octet", modality="image", settings=ALLOW)[1] == "application/octet-stream"


def test_downloaders_are_not_cached() -> None:
    for name in ("download.image", "download.audio", "download.video", "download.text"):
        spec = get_tool(name).spec
        assert spec.cacheable is False and spec.input("url").modality == Modality.TEXT


# ---------------------------------------------------------------- limits


def test_wrong_content_type_is_refused(server: str) -> None:
    with pytest.raises(DownloadError, match="Content-Type 'text/html'"):
        fetch(f"{server}/png-as-html", modality="image", settings=ALLOW)
    with pytest.raises(DownloadError, match="expected text but the body is image"):
        fetch(f"{server}/octet", modality="text", settings=ALLOW)


def test_bytes_that_lie_about_their_type_are_refused(server: str) -> None:
    with pytest.raises(DownloadError, match="no known format"):
        fetch(f"{server}/html-as-png", modality="image", settings=ALLOW)
    with pytest.raises(DownloadError, match="body is audio"):
        fetch(f"{server}/wav-as-png", modality="image", settings=ALLOW)
    with pytest.raises(DownloadError, match="unusable"):
        tool_call("download.image", f"{server}/truncated.png")


def test_endless_body_is_cut_off_while_streaming(server: str) -> None:
    start = time.monotonic()
    with pytest.raises(DownloadError, match="over the 200000-byte limit"):
        fetch(f"{server}/endless", modality="image", settings=ALLOW, max_bytes=200_000)
    assert time.monotonic() - start < 5


def test_declared_oversize_is_refused_before_reading(server: str) -> None:
    with pytest.raises(DownloadError, match="Content-Length 999999999"):
        fetch(f"{server}/declared-huge", modality="image", settings=ALLOW, max_bytes=1 << 20)


def test_redirects_are_followed_and_bounded(server: str) -> None:
    data, _ = fetch(f"{server}/chain/3", modality="image", settings=ALLOW)
    assert data == PNG
    _Handler.log.clear()
    with pytest.raises(DownloadError, match="too many redirects"):
        fetch(f"{server}/loop", modality="image", settings=ALLOW)
    assert _Handler.log == ["/loop"] * (dl.DEFAULT_MAX_REDIRECTS + 1)
    with pytest.raises(DownloadError, match="too many redirects"):
        fetch(f"{server}/chain/9", modality="image", settings=ALLOW)
    with pytest.raises(DownloadError, match="refused URL.*only http and https"):
        fetch(f"{server}/to-ftp", modality="image", settings=ALLOW)


def test_http_errors_and_timeouts(server: str) -> None:
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        fetch(f"{server}/missing", modality="text", settings=ALLOW)
    assert info.value.url == f"{server}/missing"
    quick = SimpleNamespace(allow_private_urls=True, max_artifact_bytes=1 << 20, download_timeout_seconds=0.3)
    with pytest.raises(DownloadError, match="timed out"):
        fetch(f"{server}/slow", modality="image", settings=quick)


# ---------------------------------------------------------------- address policy


def test_loopback_is_refused_by_default_without_any_request(server: str) -> None:
    _Handler.log.clear()
    port = server.rsplit(":", 1)[1]
    for url in (f"{server}/img.png", f"http://localhost:{port}/img.png", f"http://2130706433:{port}/img.png",
                f"http://[::ffff:127.0.0.1]:{port}/img.png"):
        with pytest.raises(DownloadError, match="loopback"):
            tool_call("download.image", url, settings=DENY)
    assert _Handler.log == []


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.1.2.3", "private"), ("192.168.0.10", "private"), ("172.16.5.4", "private"),
        ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("224.0.0.251", "multicast"),
        ("::1", "loopback"), ("127.0.0.1", "loopback"), ("0.0.0.0", "unspecified"), ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-public"), ("64:ff9b::a00:1", "private"), ("2002:7f00:1::", "loopback"),
        ("fd00::1", "private"), ("8.8.8.8", None), ("2606:4700:4700::1111", None),
    ],
)
def test_check_address(address: str, reason: str | None) -> None:
    assert check_address(address) == reason


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x", "gopher://x", "/relative/path", "http://"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(DownloadError):
        fetch(url, modality="text", settings=ALLOW)


def test_every_redirect_hop_is_checked_and_connections_are_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """A public host that redirects to a private one: the second hop is refused before any request."""
    monkeypatch.setattr(dl, "_resolve", lambda host, port: {"public.test": ["93.184.216.34"]}.get(host, ["10.0.0.7"]))
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers["host"]))
        if request.url.path == "/start":
            return httpx.Response(302, headers={"Location": "http://internal.test/admin"})
        return httpx.Response(200, headers={"Content-Type": "image/png"}, stream=httpx.ByteStream(PNG))

    with pytest.raises(DownloadError, match="internal.test.*private address"):
        fetch("http://public.test/start", modality="image", settings=DENY, transport=httpx.MockTransport(handler))
    assert seen == [("93.184.216.34", "public.test")]  # connected to the checked IP, never to the private one
    data, _ = fetch("http://public.test/ok.png", modality="image", settings=DENY, transport=httpx.MockTransport(handler))
    assert data == PNG
