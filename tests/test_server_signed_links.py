"""Signed artifact links on a server with API keys: they download without the header until they
expire; tampered or expired ones are 403; everything else still needs the key (401)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import openai
import pytest
from PIL import Image
from server_proc import ServerProcess

from orchestrator.server._signing import UrlSigner

pytestmark = pytest.mark.slow

KEY = "test-key-1"
SECRET = "link-secret"


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[ServerProcess]:
    env = {"ORCHESTRATOR_API_KEYS": KEY, "ORCHESTRATOR_URL_SIGNING_KEY": SECRET}
    with ServerProcess(redis_url=redis_url, env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def uploaded(server: ServerProcess) -> dict[str, str]:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 30)).save(buf, format="PNG")
    r = httpx.post(server.url("/v1/artifacts"), content=buf.getvalue(), headers={
        "Content-Type": "image/png", "Authorization": f"Bearer {KEY}"})
    assert r.status_code == 201
    return {**r.json(), "png": buf.getvalue().hex()}


def test_signed_link_downloads_without_header(server: ServerProcess, uploaded: dict[str, str]) -> None:
    url = uploaded["url"]
    assert "sig=" in url and "expires=" in url
    r = httpx.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (16, 12)
    assert httpx.get(url, headers={"Range": "bytes=0-7"}).status_code == 206  # players' range requests pass too
    fresh = httpx.get(server.url(f"/v1/artifacts/{uploaded['id']}/link"), headers={"Authorization": f"Bearer {KEY}"})
    assert fresh.status_code == 200 and httpx.get(fresh.json()["url"]).status_code == 200


def test_expired_or_tampered_links_are_403(server: ServerProcess, uploaded: dict[str, str]) -> None:
    url, aid = uploaded["url"], uploaded["id"]
    base, query = url.split("?", 1)
    params = dict(p.split("=", 1) for p in query.split("&"))
    flipped = params["sig"][:-1] + ("0" if params["sig"][-1] != "0" else "1")
    longer = int(params["expires"]) + 3600
    expired = UrlSigner(SECRET.encode(), ttl=-5).query(aid)
    forged = UrlSigner(b"another secret", ttl=600).query(aid)
    bad = [
        f"{base}?expires={params['expires']}&sig={flipped}",              # tampered signature
        f"{base}?expires={longer}&sig={params['sig']}",                    # extended expiry
        f"{base}?expires={expired['expires']}&sig={expired['sig']}",       # expired
        f"{base}?expires={forged['expires']}&sig={forged['sig']}",         # signed with another key
        f"{base}?sig={params['sig']}",                                     # no expiry
        base.replace(aid.split(":")[1], "0" * 64) + "?" + query,          # the signature of another artifact
    ]
    for link in bad:
        r = httpx.get(link)
        assert r.status_code == 403, (link, r.text)
        assert r.json()["error"]["code"] == 403
    valid = UrlSigner(SECRET.encode(), ttl=60).query(aid)  # the documented algorithm, computed here
    assert httpx.get(f"{base}?expires={valid['expires']}&sig={valid['sig']}").status_code == 200


def test_everything_else_still_needs_the_key(server: ServerProcess, uploaded: dict[str, str]) -> None:
    query = uploaded["url"].split("?", 1)[1]
    aid = uploaded["id"]
    for method, path in [("GET", f"/v1/artifacts/{aid}"), ("GET", f"/v1/artifacts/{aid}/meta?{query}"),
                         ("GET", "/v1/runs"), ("GET", f"/v1/runs?{query}"), ("GET", "/v1/models"),
                         ("POST", f"/v1/artifacts?{query}"), ("POST", "/v1/images/generations"),
                         ("DELETE", f"/v1/artifacts/{aid}?{query}")]:
        r = httpx.request(method, server.url(path))
        assert r.status_code == 401, (method, path, r.status_code)
    assert httpx.get(server.url(f"/v1/artifacts/{aid}"), headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_media_endpoint_links_work_in_a_browser_without_the_key(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=server.url("/v1"), api_key=KEY, max_retries=0, timeout=300)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url("/v1"), api_key="wrong", max_retries=0).images.generate(prompt="x")
    result = client.images.generate(prompt="a small boat", size="32x32", extra_body={"seed": 1})
    r = httpx.get(result.data[0].url)
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (32, 32)


def test_the_playground_page_is_served_without_the_key(server: ServerProcess) -> None:
    page = httpx.get(server.url("/"))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="/playground/app.js"' in page.text
    script = httpx.get(server.url("/playground/app.js"))
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert httpx.get(server.url("/playground/../settings.py")).status_code in (401, 404)
