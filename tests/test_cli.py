"""The ``orchestrator`` command line: run (graph, workflow file, prompt), catalog, artifacts, chat, serve."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from orchestrator.artifacts import Audio, decode, encode
from orchestrator.cli import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An embedded store of its own; no Redis, no network."""
    return {"ORCHESTRATOR_DATA_DIR": str(tmp_path / "data"), "ORCHESTRATOR_REDIS_URL": "", "TQDM_DISABLE": "1"}


def invoke(args: list[str], env: dict[str, str], input: str | None = None) -> Any:  # noqa: A002
    return runner.invoke(app, args, env=env, input=input, catch_exceptions=False)


def _workflow(path: Path, nodes: list[dict[str, Any]], outputs: dict[str, str]) -> Path:
    path.write_text(json.dumps({
        "name": "cli-test",
        "inputs": [{"name": "text", "modality": "text"}],
        "nodes": nodes,
        "outputs": [{"name": k, "source": v} for k, v in outputs.items()],
    }))
    return path


def test_tools_and_graphs_json(env: dict[str, str]) -> None:
    result = invoke(["tools", "--json"], env)
    assert result.exit_code == 0
    tools = {t["name"]: t for t in json.loads(result.stdout)}
    assert "template" in tools["text.template"]["params_schema"]["properties"]
    assert tools["speech.espeak"]["task"] == "text-to-speech"
    table = invoke(["tools", "--task", "text-to-speech"], env)
    assert table.exit_code == 0 and "speech.espeak" in table.stdout and "text.template" not in table.stdout
    graphs = json.loads(invoke(["graphs", "--json"], env).stdout)
    assert "clean-and-visualize" in {g["name"] for g in graphs}


def test_run_workflow_file_writes_outputs_and_manifest(env: dict[str, str], tmp_path: Path) -> None:
    wf = _workflow(tmp_path / "wf.json", [
        {"id": "wrap", "tool": "text.template", "params": {"template": "<<{text}>>"}, "inputs": {"texts": "text"}},
        {"id": "speak", "tool": "speech.espeak", "inputs": {"text": "wrap.text"}},
    ], {"result": "wrap.text", "speech": "speak.audio"})
    out = tmp_path / "out"
    result = invoke(["run", "--graph", str(wf), "-i", "text=hello there", "--out", str(out), "--seed", "3"], env)
    assert result.exit_code == 0, result.output
    assert (out / "result.txt").read_text() == "<<hello there>>"
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["request"]["workflow"] == "cli-test"
    speech = manifest["outputs"]["speech"]
    data = Path(speech["file"]).read_bytes()
    assert speech["id"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert speech["modality"] == "audio" and speech["mime"] == "audio/wav"
    audio = decode(data, "audio")
    assert audio.sample_rate == 22050 and audio.duration > 0.3
    assert set(manifest["timings"]["nodes"]) == {"wrap", "speak"}
    assert manifest["timings"]["nodes"]["speak"]["status"] == "succeeded"
    assert f"manifest: {out / 'run.json'}" in result.stdout and "succeeded" in result.stdout
    assert f"files:    {out / 'result.txt'}, {out / 'speech.wav'}" in result.stdout


def test_run_prebuilt_graph_with_file_input(env: dict[str, str], tmp_path: Path) -> None:
    t = np.arange(8000) / 16000
    wav = tmp_path / "tone.wav"
    wav.write_bytes(encode(Audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000))[0])
    out = tmp_path / "out"
    result = invoke(["run", "--graph", "clean-and-visualize", "-i", f"audio={wav}", "-i", "instruction=add echo",
                     "--out", str(out), "-q"], env)
    assert result.exit_code == 0, result.output
    cleaned = decode((out / "audio.wav").read_bytes(), "audio")
    assert cleaned.sample_rate == 16000 and cleaned.duration >= 0.5 - 1e-3
    image = decode((out / "waveform.png").read_bytes(), "image")
    assert image.size[0] > 10
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["outputs"]["waveform"]["file"].endswith("waveform.png")


def test_run_failures_exit_non_zero(env: dict[str, str], tmp_path: Path) -> None:
    bad_tool = _workflow(tmp_path / "bad.json", [{"id": "x", "tool": "no.such.tool", "inputs": {"text": "text"}}],
                         {"o": "x.text"})
    result = invoke(["run", "--graph", str(bad_tool), "-i", "text=a", "--out", str(tmp_path / "o1")], env)
    assert result.exit_code == 1 and "no.such.tool" in result.output
    failing = _workflow(tmp_path / "fail.json", [
        {"id": "broken", "tool": "text.template", "params": {"template": "stray {"}, "inputs": {"texts": "text"}}],
        {"o": "broken.text"})
    out = tmp_path / "o2"
    result = invoke(["run", "--graph", str(failing), "-i", "text=a", "--out", str(out)], env)
    assert result.exit_code == 1 and "failed" in result.output and "stray" in result.output
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    partial = _workflow(tmp_path / "partial.json", [
        {"id": "broken", "tool": "text.template", "params": {"template": "stray {"}, "inputs": {"texts": "text"}},
        {"id": "fine", "tool": "text.template", "params": {"template": "ok"}, "inputs": {"texts": "text"}}],
        {"bad": "broken.text", "good": "fine.text"})
    out = tmp_path / "o3"
    result = invoke(["run", "--graph", str(partial), "-i", "text=a", "--out", str(out)], env)
    assert result.exit_code == 2 and (out / "good.txt").read_text() == "ok" and not (out / "bad.txt").exists()
    assert invoke(["run"], env).exit_code == 2
    assert invoke(["run", "--graph", str(partial), "-i", "novalue"], env).exit_code == 2


def test_run_prompt_with_the_heuristic_planner(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(["run", "Summarize this text: 'Servers stream events. Clients resume. Redis keeps state.'",
                     "--out", str(out)], env)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["request"]["llm"] == "offline"
    assert manifest["plan"]["tasks"][0]["task"] == "summarization"
    (info,) = manifest["outputs"].values()
    assert Path(info["file"]).read_text() in manifest["answer"]
    assert manifest["answer"].splitlines()[0] in result.output
    # the same request again: the task is cached, and still lists its output file
    again = invoke(["run", "Summarize this text: 'Servers stream events. Clients resume. Redis keeps state.'",
                    "--out", str(out)], env)
    assert again.exit_code == 0, again.output
    nodes = json.loads((out / "run.json").read_text())["timings"]["nodes"]
    assert nodes["t0"]["status"] == "cached" and nodes["t0"]["outputs"] == [info["file"]]


def test_a_refused_request_exits_non_zero_with_status_refused(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(["run", "How are you today, my friend?", "--out", str(out)], env)
    assert result.exit_code == 3, result.output
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "refused" and manifest["outputs"] == {}
    assert manifest["refusals"] and "needs a language model" in manifest["refusals"][0]
    assert "refused:" in result.output and "needs a language model" in result.output
    # partly refused: what can run offline runs, the rest is listed, exit 2
    partly = invoke(["run", "Translate 'Guten Morgen' into English and say 'hello there' out loud",
                     "--out", str(tmp_path / "out2")], env)
    assert partly.exit_code == 2, partly.output
    manifest = json.loads((tmp_path / "out2" / "run.json").read_text())
    assert manifest["status"] == "partial" and any(o["modality"] == "audio" for o in manifest["outputs"].values())
    assert any("translation" in r and "needs a language model" in r for r in manifest["refusals"])


def test_plan_prints_a_three_step_plan_as_json_without_running_it(env: dict[str, str], tmp_path: Path) -> None:
    wav = tmp_path / "talk.wav"
    wav.write_bytes(encode(Audio((0.3 * np.sin(np.arange(8000) * 0.05)).astype(np.float32), 16000))[0])
    result = invoke(["plan", "Transcribe talk.wav, summarize the transcript and read the summary aloud",
                     "-i", f"talk.wav={wav}", "--json"], env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] == "planned" and doc["planner"] == "offline" and doc["problems"] == []
    assert [(t["task"], t["dep"], t["tool"]) for t in doc["tasks"]] == [
        ("automatic-speech-recognition", [-1], "speech.transcribe"),
        ("summarization", [0], "llm.summarization"),
        ("text-to-speech", [1], "speech.espeak")]
    assert doc["tasks"][0]["args"] == {"audio": "talk.wav"} and doc["tasks"][2]["args"] == {"text": "<GENERATED>-1"}
    stored = list((Path(env["ORCHESTRATOR_DATA_DIR"]) / "artifacts").rglob("*.json"))
    assert len(stored) == 1  # only the input: planned, not run (no transcript, summary or speech)
    refused = invoke(["plan", "How are you today?", "--json"], env)
    assert refused.exit_code == 3 and json.loads(refused.stdout)["status"] == "refused"


def test_artifacts_put_get_meta(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "note.txt"
    src.write_text("artifact via cli")
    put = invoke(["artifacts", "put", str(src), "--modality", "text"], env)
    assert put.exit_code == 0, put.output
    ref = json.loads(put.stdout)
    dest = tmp_path / "copy.txt"
    got = invoke(["artifacts", "get", ref["id"], "-o", str(dest)], env)
    assert got.exit_code == 0 and dest.read_text() == "artifact via cli"
    meta = json.loads(invoke(["artifacts", "meta", ref["id"]], env).stdout)
    assert meta["size"] == len("artifact via cli") and meta["modality"] == "text"
    missing = invoke(["artifacts", "get", "sha256:" + "0" * 64, "-o", str(tmp_path / "x")], env)
    assert missing.exit_code == 1 and "no such artifact" in missing.output


def test_chat_reads_messages_from_stdin_and_saves_media(env: dict[str, str], tmp_path: Path) -> None:
    media = tmp_path / "media"
    result = invoke(["chat", "--out", str(media), "--session", "cli-s"], env,
                    input="hello there\nsay 'good morning' out loud\n/quit\nnever read\n")
    assert result.exit_code == 0, result.output
    assert "offline planner" in result.output  # small talk: the heuristic says what it can do
    (saved,) = media.glob("*.wav")
    unwrapped = "".join(result.output.split())  # rich wraps long paths at the virtual terminal's width
    assert f"[savedaudio:{saved}]" in unwrapped
    speech = decode(saved.read_bytes(), "audio")
    assert speech.sample_rate == 22050 and speech.duration > 0.3


def test_zoo_list_and_serve_refuses_open_host(env: dict[str, str]) -> None:
    listed = invoke(["zoo", "list"], env)
    assert listed.exit_code == 0 and "tiny-sd" in listed.stdout
    assert invoke(["zoo", "build", "huge"], env).exit_code == 2
    refused = invoke(["serve", "--host", "0.0.0.0", "--port", "0"], env)
    assert refused.exit_code == 1 and "API keys" in refused.output


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "orchestrator", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("run", "chat", "serve", "tools", "graphs", "zoo", "artifacts"):
        assert command in result.stdout


def test_chat_attach_gives_the_file_to_the_planner(env: dict[str, str], tmp_path: Path) -> None:
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (10, 200, 10)).save(photo)
    media = tmp_path / "media"
    result = invoke(["chat", "--out", str(media)], env, input=f"/attach {photo}\ndescribe photo.png\n/quit\n")
    assert result.exit_code == 0, result.output
    assert "attached photo.png: image" in result.output
    saved = sorted(p.suffix for p in media.iterdir())
    assert ".txt" in saved  # the caption of the attached photo came back as a text artifact


def test_artifacts_get_from_an_unreachable_server_is_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    result = invoke(["artifacts", "get", "sha256:" + "a" * 64, "-o", str(tmp_path / "x"),
                     "--server", "http://127.0.0.1:1"], env)
    assert result.exit_code == 1 and "cannot reach the server" in result.output
    assert invoke(["artifacts", "get", "nope", "-o", str(tmp_path / "x"), "--server", "http://127.0.0.1:1"],
                  env).exit_code == 2


def test_run_with_an_llm_over_http_one_workflow_text_task_into_speech(env: dict[str, str], tmp_path: Path) -> None:
    """--llm openai:<model>@<url>: the SDK client plans, a text task answers, speech reads it, one run."""
    from llm_server import ScriptedLLMServer

    plan = ('{"tasks": [{"task": "translation", "id": 0, "dep": [-1], "args": {"text": "good morning", '
            '"language": "German"}}, {"task": "text-to-speech", "id": 1, "dep": [0], '
            '"args": {"text": "<GENERATED>-0"}}], "refusal": null}')

    def answer(body: dict) -> str:
        system = body["messages"][0]["content"]
        if "task planner" in system:
            return plan
        if "one text task" in system:
            return "Guten Morgen"
        return "Here it is: [audio]"

    with ScriptedLLMServer([answer] * 3) as srv:
        out = tmp_path / "out"
        result = invoke(["run", "say good morning in German", "--llm", f"openai:m@{srv.base_url}", "--out", str(out)],
                        env)
        assert result.exit_code == 0, result.output
        assert srv.requests[0]["response_format"]["type"] == "json_schema"  # the plan's schema went out
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["request"]["llm"].startswith("openai:m@")
    assert (out / "t0_text.txt").read_text() == "Guten Morgen"
    assert set(manifest["timings"]["nodes"]) == {"t0", "t1"}  # both tasks in the one workflow
    assert manifest["timings"]["nodes"]["t0"]["tool"] == "llm.translation"
    assert decode((out / "t1_audio.wav").read_bytes(), "audio").duration > 0.2


def test_run_imports_the_model_libraries_in_the_background(env: dict[str, str], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``run`` starts the ``preload_imports`` as soon as it knows models run here (before planning)."""
    import sys
    import time

    (tmp_path / "orch_cli_preloaded.py").write_text("import threading\nIMPORTED_BY = threading.current_thread().name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "orch_cli_preloaded", raising=False)
    wf = _workflow(tmp_path / "wf.json", [
        {"id": "wrap", "tool": "text.template", "params": {"template": "<{text}>"}, "inputs": {"texts": "text"}},
    ], {"result": "wrap.text"})
    result = invoke(["run", "--graph", str(wf), "-i", "text=hi", "--out", str(tmp_path / "out")],
                    {**env, "ORCHESTRATOR_PRELOAD_IMPORTS": '["orch_cli_preloaded"]'})
    assert result.exit_code == 0, result.output
    for _ in range(100):
        if "orch_cli_preloaded" in sys.modules:
            break
        time.sleep(0.02)
    assert sys.modules["orch_cli_preloaded"].IMPORTED_BY == "orch-preload"
