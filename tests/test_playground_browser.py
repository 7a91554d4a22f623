"""The web playground in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium).

The server has an API key (so the page's key field and the signed media links are
part of every test) and a scripted LLM behind a real HTTP server that plans by
keyword. Screenshots are saved under the test's output directory.
"""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from llm_server import Reply, ScriptedLLMServer
from PIL import Image
from server_proc import ServerProcess

from orchestrator.artifacts import decode

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
KEY = "ui-test-key"
SCREENS_COPY = Path("/work/briefs/screens13")  # a copy for people reviewing the change, when it exists
_REF = re.compile(r"\[(\w+): (sha256:[0-9a-f]{64})\]")
_IMAGE_RESOURCE = re.compile(r"^- ([\w.\-]+): image$", re.M)


def _script(body: dict[str, Any]) -> Reply:
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    last = body["messages"][-1]["content"]
    last = last if isinstance(last, str) else " ".join(p.get("text", "") for p in last)
    if system.startswith("You are the task planner"):
        if "gray" in last and _IMAGE_RESOURCE.search(system):
            image = _IMAGE_RESOURCE.search(system).group(1)
            return Reply(f'[{{"task": "image-grayscale", "id": 0, "dep": [-1], "args": {{"image": "{image}"}}}}]')
        if "draw" in last:
            return Reply('[{"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "a lighthouse"}}]')
        if "say" in last:
            return Reply('[{"task": "text-to-speech", "id": 0, "dep": [-1], "args": {"text": "hello from the page"}}]')
        if "count" in last:
            return Reply('[{"task": "test-steps", "id": 0, "dep": [-1], "args": {"text": "one two three"}},'
                         ' {"task": "test-steps", "id": 1, "dep": [0], "args": {"text": "<GENERATED>-0"}}]')
        return Reply("[]")
    if system.startswith("You are a multimodal assistant. Tools have just run"):
        refs = " ".join(m.group(0) for m in _REF.finditer(last))
        if "ONE TWO THREE" in last:  # the stepped run: answer slowly, so the run stays live for a while
            return Reply("Counted, step by step, all the way to the end of the list. " + refs, delay=0.25,
                         chunk_chars=3)
        return Reply(f"Here you are: {refs}", chunk_chars=8)
    return Reply("ok")


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[ServerProcess]:
    with ScriptedLLMServer([_script], repeat_last=True) as llm:
        env = {"ORCHESTRATOR_LLM": f"openai:scripted@{llm.base_url}", "ORCHESTRATOR_LLM_API_KEY": "unused",
               "ORCHESTRATOR_API_KEYS": KEY}
        with ServerProcess(redis_url=redis_url, env=env) as srv:
            yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("playground-screens")


@pytest.fixture
def page(browser: Any, server: ServerProcess) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server.url("/"))
    yield page
    context.close()


def _snap(page: Any, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if SCREENS_COPY.parent.is_dir():
        SCREENS_COPY.mkdir(exist_ok=True)
        shutil.copy(path, SCREENS_COPY / path.name)
    return path


def _enter_key(page: Any) -> None:
    page.locator("#key-bar").wait_for(state="visible")
    page.get_by_label("This server needs an API key").fill(KEY)
    page.get_by_role("button", name="Use key").click()
    page.get_by_text("Key accepted.").wait_for()


def _ask(page: Any, text: str) -> Any:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")  # keyboard use: Enter sends
    return page.locator(".msg.assistant").last


def test_key_field_then_an_image_from_an_artifact(page: Any, shots: Path) -> None:
    page.locator("#key-bar").wait_for(state="visible")  # the page found out the API needs a key
    _enter_key(page)
    assert "orchestrator" in page.locator("#model option").all_inner_texts()
    answer = _ask(page, "draw a lighthouse at dusk")
    image = answer.locator(".media img").first
    image.wait_for()
    assert re.search(r"/v1/artifacts/sha256:[0-9a-f]{64}\?expires=\d+&sig=[0-9a-f]{64}$", image.get_attribute("src"))
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert answer.get_attribute("data-status") == "done"
    assert answer.locator(".plan svg g[data-node='t0']").count() == 1  # the plan, drawn
    page.locator("#run-list li").first.wait_for()
    page.locator("#gallery img").first.wait_for()
    _snap(page, shots, "image-answer")


def test_speech_gets_an_audio_player(page: Any, shots: Path) -> None:
    _enter_key(page)
    answer = _ask(page, "say hello out loud")
    player = answer.locator(".media audio").first
    player.wait_for()
    assert "/v1/artifacts/sha256:" in player.get_attribute("src") and player.get_attribute("controls") is not None
    duration = page.wait_for_function(
        "a => a.readyState >= 1 && isFinite(a.duration) && a.duration > 0 ? a.duration : null",
        arg=player.element_handle()).json_value()
    assert duration > 0.3
    _snap(page, shots, "speech-answer")


def test_per_node_progress_shows_while_the_run_is_live(page: Any, shots: Path) -> None:
    _enter_key(page)
    answer = _ask(page, "count to three in steps")
    live = page.wait_for_function("""() => {
        const m = [...document.querySelectorAll('.msg.assistant')].pop();
        const done = m && m.querySelectorAll('.progress li[data-status="done"]').length;
        return m && m.dataset.status === 'running' && done >= 1 ? done : null;
    }""").json_value()
    assert live >= 1
    _snap(page, shots, "progress-live")
    streamed = page.wait_for_function("""() => {  // the answer streams in: part of it shows while the run is live
        const m = [...document.querySelectorAll('.msg.assistant')].pop();
        const text = m.querySelector('.text').textContent;
        return m.dataset.status === 'running' && text.length > 0 ? text : null;
    }""").json_value()
    assert "Counted, step by step".startswith(streamed[:5]) and len(streamed) < len("Counted, step by step, all the way")
    rows = answer.locator(".progress li")
    assert rows.count() >= 1 and "testsrv.steps" in rows.first.inner_text()
    answer.locator("xpath=self::*[@data-status='done']").wait_for()
    assert answer.locator(".progress li[data-status='done']").count() == 2
    assert answer.locator(".plan svg g[data-status='done']").count() == 2  # both boxes of the plan turned done
    assert "Counted, step by step" in answer.locator(".text").inner_text()


def _png(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_an_upload_feeds_a_run(page: Any, server: ServerProcess, shots: Path) -> None:
    _enter_key(page)
    # drag and drop attaches too
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array([137, 80, 78, 71])], 'dropped.png', {type: 'image/png'}));
        document.querySelector('.chat').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
    }""")
    page.get_by_role("button", name="Remove dropped.png").click()  # and can be taken back
    page.locator("#file").set_input_files(files=[{"name": "photo.png", "mimeType": "image/png",
                                                  "buffer": _png((40, 30), (220, 30, 30))}])
    page.get_by_text("image: photo.png").wait_for()
    answer = _ask(page, "make my photo gray")
    page.locator(".msg.user .media img").first.wait_for()  # the upload, shown in the user's message
    image = answer.locator(".media img").first
    image.wait_for()
    answer.locator("xpath=self::*[@data-status='done']").wait_for()
    run_id = answer.get_attribute("data-run")
    run = httpx.get(server.url(f"/v1/runs/{run_id}"), headers={"Authorization": f"Bearer {KEY}"}).json()
    uploaded = [v for v in run["inputs"].values() if isinstance(v, dict) and v.get("modality") == "image"]
    assert uploaded and uploaded[0]["meta"]["width"] == 40
    gray = np.asarray(decode(httpx.get(image.get_attribute("src")).content, "image"))
    assert gray.shape[:2] == (30, 40) and 70 < gray.mean() < 100  # the upload, grayed
    _snap(page, shots, "upload-answer")
