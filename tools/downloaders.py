"""URL downloaders (TaskBench's Image, Audio, Video and Text Downloader) and the guarded
:func:`fetch` they share with the REST server's URL inputs.

These tools are exposed to remote users, so a fetch is a request made on their behalf
from inside our network. :func:`fetch` therefore:

- accepts only ``http``/``https`` URLs;
- resolves the host itself and refuses loopback, private, link-local, multicast,
  reserved and other non-public addresses (``ORCHESTRATOR_ALLOW_PRIVATE_URLS=true``
  lifts this, for trusted deployments and tests); the connection then goes to the
  checked IP (the hostname kept for ``Host`` and TLS SNI), so a DNS answer that
  changes between check and connect cannot slip through;
- follows redirects by hand, at most ``max_redirects``, checking every hop the same way;
- refuses a ``Content-Type`` of another modality, and bytes whose magic number says so;
- stops reading as soon as the body passes the size cap (``Content-Length`` is checked
  first, but never trusted), and applies connect/read timeouts plus an overall deadline.

Every refusal or failure is a :class:`~orchestrator.errors.DownloadError` carrying ``url=``.

>>> from tools.downloaders import fetch
>>> data, content_type = fetch("https://example.org/cat.png", modality="image")  # doctest: +SKIP
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.artifacts import Modality, sniff
from orchestrator.artifacts.codecs import decode
from orchestrator.errors import ArtifactError, DownloadError
from orchestrator.tool import tool

from ._media import as_text, limits_of, settings_of
from .text import extract_urls

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_REDIRECTS",
    "DEFAULT_TIMEOUT_SECONDS",
    "DownloadParams",
    "TextDownloadParams",
    "check_address",
    "check_url",
    "fetch",
    "html_to_text",
]

logger = logging.getLogger("orchestrator.tools.download")

DEFAULT_MAX_BYTES = 200 << 20
DEFAULT_TIMEOUT_SECONDS = 20.0
DEFAULT_DEADLINE_SECONDS = 300.0
DEFAULT_MAX_REDIRECTS = 5
MAX_URL_LENGTH = 4096
USER_AGENT = "any2any-orchestrator/0.1 (+downloader)"

_REDIRECTS = {301, 302, 303, 307, 308}
_GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream", "application/unknown"}
_ACCEPTED_TYPES: dict[Modality, tuple[str, ...]] = {
    Modality.IMAGE: ("image/",),
    Modality.AUDIO: ("audio/", "application/ogg", "application/x-flac", "application/x-wav"),
    Modality.VIDEO: ("video/", "application/mp4", "application/x-matroska"),
    Modality.TEXT: (
        "text/", "application/json", "application/ld+json", "application/xml", "application/xhtml+xml",
        "application/rss+xml", "application/atom+xml", "application/javascript", "application/x-yaml",
        "application/yaml", "application/markdown",
    ),
}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


# ---------------------------------------------------------------- address policy


def _resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (tests replace this to simulate DNS)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def check_address(address: str) -> str | None:
    """Why ``address`` may not be fetched from (``"loopback"``, ``"private"`` …), or ``None`` if it is public."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip.teredo is not None:
            ip = ip.teredo[1]
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    for reason in ("loopback", "unspecified", "link_local", "multicast", "reserved", "private"):
        if getattr(ip, f"is_{reason}"):
            return reason.replace("_", "-")
    if not ip.is_global:
        return "non-public"
    return None


def _pinned_target(url: httpx.URL, allow_private: bool) -> tuple[httpx.URL, str]:
    """Resolve and check ``url``'s host; return the URL aimed at the checked IP, and that IP."""
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = _resolve(host, port)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise DownloadError(f"cannot resolve host {host!r}: {exc}", url=str(url)) from exc
    if not addresses:
        raise DownloadError(f"host {host!r} resolves to no address", url=str(url))
    if not allow_private:
        for address in addresses:
            reason = check_address(address)
            if reason is not None:
                raise DownloadError(
                    f"refused: host {host!r} resolves to a {reason} address ({address}); downloads from "
                    "non-public addresses are off (set ORCHESTRATOR_ALLOW_PRIVATE_URLS=true to allow them)",
                    url=str(url),
                )
    address = sorted(addresses, key=lambda a: ":" in a)[0]  # IPv4 first
    return url.copy_with(host=address.split("%", 1)[0]), address


# ---------------------------------------------------------------- fetch


def _setting(settings: Any, name: str, default: Any) -> Any:
    value = getattr(settings, name, None)
    return default if value is None else value


def _check_url(raw: str) -> httpx.URL:
    import httpx

    if not isinstance(raw, str) or not raw.strip():
        raise DownloadError("the URL is empty", url=raw if isinstance(raw, str) else None)
    raw = raw.strip()
    if len(raw) > MAX_URL_LENGTH:
        raise DownloadError(f"the URL is longer than {MAX_URL_LENGTH} characters", url=raw[:200])
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise DownloadError(f"malformed URL: {exc}", url=raw) from exc
    if url.scheme not in ("http", "https"):
        raise DownloadError(f"only http and https URLs can be downloaded, not {url.scheme or 'a relative URL'!r}", url=raw)
    if not url.host:
        raise DownloadError("the URL has no host", url=raw)
    return url


class _Deadline:
    """Ends a download at its overall deadline, whatever it is waiting for.

    Per-read timeouts cannot stop a server that trickles its headers (or body) a byte
    at a time; so the connection's socket is captured through httpcore's ``trace``
    extension and shut down by a timer when the deadline passes, which wakes the
    blocked read. ``expired`` tells the caller why the exchange broke off.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def trace(self, name: str, info: dict[str, Any]) -> None:
        if name.endswith("connect_tcp.complete") and info.get("return_value") is not None:
            sock = info["return_value"].get_extra_info("socket")
            if sock is not None:
                with self._lock:
                    self._sockets.append(sock)
                    if self.expired:
                        self._shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def check(self, where: str) -> None:
        if self.expired or time.monotonic() > self.at:
            raise DownloadError(f"the download took longer than the overall deadline of {self.seconds:g}s", url=where)


def check_url(url: str, *, settings: Any = None) -> None:
    """Refuse now what :func:`fetch` would refuse before sending anything: the scheme, a
    malformed URL, a host that does not resolve or resolves to a non-public address (unless
    ``allow_private_urls``). Lets the server answer a client's bad URL with a 4xx at once;
    :func:`fetch` checks again (every hop, pinned) when it runs. Blocking (DNS)."""
    if settings is None:
        from orchestrator.settings import get_settings

        settings = get_settings()
    _pinned_target(_check_url(url), bool(getattr(settings, "allow_private_urls", False)))


def _content_type_ok(content_type: str, modality: Modality) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime in _GENERIC_TYPES or mime.startswith(_ACCEPTED_TYPES[modality])


def fetch(url: str, *, modality: Modality | str, settings: Any = None, max_bytes: int | None = None,
          transport: httpx.BaseTransport | None = None) -> tuple[bytes, str]:
    """Download ``url`` under the limits above; returns ``(body, content_type)``.

    ``modality`` is what the caller expects (its content types and magic numbers are
    enforced). ``max_bytes`` can only lower the configured cap. ``settings`` defaults to
    the process settings; ``transport`` lets tests inject an ``httpx.MockTransport``.
    """
    import httpx

    # 1. Limits and policy
    modality = Modality(modality)
    if modality not in _ACCEPTED_TYPES:
        raise DownloadError(f"cannot download a {modality} artifact; use image, audio, video or text", url=url)
    if settings is None:
        from orchestrator.settings import get_settings

        settings = get_settings()
    allow_private = bool(getattr(settings, "allow_private_urls", False))
    cap = min(int(_setting(settings, "download_max_bytes", DEFAULT_MAX_BYTES)), int(settings.max_artifact_bytes))
    if max_bytes is not None:
        cap = min(cap, int(max_bytes))
    timeout_s = float(_setting(settings, "download_timeout_seconds", DEFAULT_TIMEOUT_SECONDS))
    max_redirects = int(_setting(settings, "download_max_redirects", DEFAULT_MAX_REDIRECTS))
    deadline_s = float(_setting(settings, "download_deadline_seconds", DEFAULT_DEADLINE_SECONDS))
    current = _check_url(url)
    # 2. Follow the redirect chain by hand, checking every hop; the deadline covers it all (headers too)
    timeout = httpx.Timeout(min(timeout_s, deadline_s), connect=min(timeout_s, deadline_s, 10.0))
    with _Deadline(deadline_s) as deadline, httpx.Client(
        timeout=timeout, follow_redirects=False, trust_env=False, transport=transport
    ) as client:
        for hop in range(max_redirects + 1):
            deadline.check(str(current))
            target, address = _pinned_target(current, allow_private)
            headers = {
                "Host": current.netloc.decode("ascii"), "User-Agent": USER_AGENT, "Accept": "*/*",
                "Accept-Encoding": "identity",
            }
            extensions: dict[str, Any] = {"trace": deadline.trace}
            if current.scheme == "https":
                extensions["sni_hostname"] = current.host
            request = client.build_request("GET", target, headers=headers, extensions=extensions)
            logger.debug("fetch hop %d: %s (%s)", hop, current, address)
            try:
                response = client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                deadline.check(str(current))
                raise DownloadError(f"timed out after {timeout_s:g}s connecting to or reading from {current.host}", url=str(current)) from exc
            except httpx.HTTPError as exc:
                deadline.check(str(current))
                raise DownloadError(f"request failed: {exc}", url=str(current)) from exc
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise DownloadError(f"HTTP {response.status_code} redirect without a Location header", url=str(current))
                    try:
                        current = _check_url(str(current.join(location)))
                    except DownloadError as exc:
                        raise DownloadError(f"redirected to a refused URL: {exc.message}", url=str(current)) from exc
                    continue
                return _read_body(response, current, modality, cap, deadline)
            finally:
                response.close()
    raise DownloadError(f"too many redirects (more than {max_redirects})", url=url)


def _read_body(response: httpx.Response, url: httpx.URL, modality: Modality, cap: int, deadline: _Deadline) -> tuple[bytes, str]:
    import httpx

    where = str(url)
    if response.status_code >= 400:
        raise DownloadError(f"the server answered HTTP {response.status_code} {response.reason_phrase}", url=where, status=response.status_code)
    if response.status_code != 200:
        raise DownloadError(f"unexpected HTTP {response.status_code} {response.reason_phrase}", url=where, status=response.status_code)
    content_type = response.headers.get("content-type", "")
    if not _content_type_ok(content_type, modality):
        raise DownloadError(f"refused: expected {modality} but the server sent Content-Type {content_type!r}", url=where)
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise DownloadError(f"refused: Content-Length {int(declared)} is over the {cap}-byte limit", url=where)
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_raw():  # raw: a compressed body must not inflate past the cap unseen
            size += len(chunk)
            if size > cap:
                raise DownloadError(f"refused: the body is over the {cap}-byte limit (stopped reading)", url=where)
            deadline.check(where)
            chunks.append(chunk)
    except httpx.TimeoutException as exc:
        deadline.check(where)
        raise DownloadError("timed out while reading the body", url=where) from exc
    except httpx.HTTPError as exc:
        deadline.check(where)
        raise DownloadError(f"the download broke off: {exc}", url=where) from exc
    data = b"".join(chunks)
    encoding = response.headers.get("content-encoding", "identity").lower().strip()
    if encoding not in ("", "identity"):
        data = _decompress(data, encoding, cap, where)
    if not data:
        raise DownloadError("the server sent an empty body", url=where)
    sniffed = sniff(data)
    if modality is Modality.TEXT:
        if sniffed is not None and sniffed is not Modality.TEXT:
            raise DownloadError(f"expected text but the body is {sniffed} data", url=where)
    elif sniffed is not modality:
        what = f"{sniffed} data" if sniffed else "no known format"
        raise DownloadError(f"expected {modality} but the body is {what}", url=where)
    return data, content_type


def _decompress(data: bytes, encoding: str, cap: int, where: str) -> bytes:
    import zlib

    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise DownloadError(f"unsupported Content-Encoding {encoding!r}", url=where)
    wbits = 31 if "gzip" in encoding else 15
    try:
        d = zlib.decompressobj(wbits)
        out = d.decompress(data, cap + 1)
    except zlib.error as exc:
        raise DownloadError(f"the {encoding} body is corrupt: {exc}", url=where) from exc
    if len(out) > cap or d.unconsumed_tail:
        raise DownloadError(f"refused: the decompressed body is over the {cap}-byte limit", url=where)
    return out


# ---------------------------------------------------------------- HTML to text


class _TextExtractor(HTMLParser):
    _SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "pre",
              "blockquote", "title", "header", "footer", "ul", "ol", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skip:
            self._skip -= 1
        if tag == "title":
            self._in_title = False
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The readable text of an HTML page: scripts and styles dropped, one block per line."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    body = "\n".join(line for line in lines if line)
    title = " ".join(parser.title.split())
    return f"{title}\n\n{body}" if title and not body.startswith(title) else body


# ---------------------------------------------------------------- tools


class DownloadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_bytes: int | None = Field(default=None, ge=1, description="lower the configured size cap for this download")


class TextDownloadParams(DownloadParams):
    html: Literal["text", "raw"] = Field(default="text", description="HTML pages: 'text' keeps the readable text, 'raw' the markup")


def _url_from(value: Any, tool_name: str) -> str:
    text = as_text(value, tool=tool_name, port="url").strip()
    if text.lower().startswith(("http://", "https://")) and not any(c.isspace() for c in text):
        return text
    found = list(dict.fromkeys(extract_urls(text)))
    if len(found) == 1:
        return found[0]
    raise DownloadError(
        "the url input must be one http(s) URL" + (f"; found {len(found)} URLs in the text" if found else ""),
        url=text[:200], tool=tool_name,
    )


def _download(url: Any, modality: Modality, tool_name: str, params: DownloadParams, ctx: Any) -> Any:
    target = _url_from(url, tool_name)
    data, content_type = fetch(target, modality=modality, settings=settings_of(ctx), max_bytes=params.max_bytes)
    if modality is Modality.TEXT:
        return _as_text(data, content_type, target, params)
    try:
        return decode(data, modality, limits=limits_of(ctx))
    except ArtifactError as exc:
        raise DownloadError(f"the downloaded {modality} is unusable: {exc.message}", url=target, tool=tool_name) from exc


def _as_text(data: bytes, content_type: str, url: str, params: DownloadParams) -> str:
    charset = "utf-8"
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip("\"' ").lower()
    try:
        text = data.decode(charset)
    except (LookupError, UnicodeDecodeError):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DownloadError(f"the text is not valid {charset} or UTF-8", url=url) from exc
    mime = content_type.split(";", 1)[0].strip().lower()
    looks_html = mime in ("text/html", "application/xhtml+xml") or text.lstrip()[:15].lower().startswith(("<!doctype html", "<html"))
    if looks_html and getattr(params, "html", "text") == "text":
        text = html_to_text(text)
    return text


_COMMON = {"inputs": {"url": {"modality": "text", "description": "an http(s) URL"}}, "cacheable": False}


@tool("download.image", task="image-downloader", description="Download an image from a URL.",
      outputs={"image": "image"}, params=DownloadParams, **_COMMON)
def image_downloader(url: Any, *, params: DownloadParams, ctx: Any = None) -> Any:
    return _download(url, Modality.IMAGE, "download.image", params, ctx)


@tool("download.audio", task="audio-downloader", description="Download an audio file (WAV, FLAC, OGG, MP3) from a URL.",
      outputs={"audio": "audio"}, params=DownloadParams, **_COMMON)
def audio_downloader(url: Any, *, params: DownloadParams, ctx: Any = None) -> Any:
    return _download(url, Modality.AUDIO, "download.audio", params, ctx)


@tool("download.video", task="video-downloader", description="Download a video file (MP4, MOV, WebM, MKV) from a URL.",
      outputs={"video": "video"}, params=DownloadParams, **_COMMON)
def video_downloader(url: Any, *, params: DownloadParams, ctx: Any = None) -> Any:
    return _download(url, Modality.VIDEO, "download.video", params, ctx)


@tool("download.text", task="text-downloader",
      description="Download the text content of a URL (HTML pages reduced to their readable text).",
      outputs={"text": "text"}, params=TextDownloadParams, **_COMMON)
def text_downloader(url: Any, *, params: TextDownloadParams, ctx: Any = None) -> str:
    return _download(url, Modality.TEXT, "download.text", params, ctx)
