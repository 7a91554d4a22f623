"""The tiny offline zoo: built locally (no network), cached, loaded by the real from_pretrained path."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from orchestrator.errors import ModelLoadError, ModelNotFound
from orchestrator.runtime import build_zoo, get_profile, list_zoo, zoo_model, zoo_path
from orchestrator.runtime import zoo as zoo_module

DECODER_ZOO = ["tiny-sd", "tiny-t2v", "tiny-audioldm", "tiny-musicgen", "tiny-vits", "tiny-chat"]


@pytest.fixture(scope="module")
def zoo() -> dict[str, Path]:
    """The decoder checkpoints, from the on-disk cache (built on first use)."""
    return build_zoo(DECODER_ZOO)


@pytest.fixture
def scratch_builders():
    """Register throwaway builders and remove them afterwards."""
    names: list[str] = []

    def register(name: str, fn, version: str = "1") -> None:
        names.append(name)
        zoo_model(name, version=version)(fn)

    yield register
    for name in names:
        zoo_module._REGISTRY.pop(name, None)


def test_every_profile_zoo_name_has_a_builder() -> None:
    assert set(DECODER_ZOO) <= set(list_zoo())
    assert set(get_profile("tiny").zoo_names()) <= set(list_zoo())


def test_checkpoints_have_configs_weights_and_tokenizers(zoo: dict[str, Path]) -> None:
    sd = zoo["tiny-sd"]
    index = json.loads((sd / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for part in ("unet", "vae", "text_encoder"):
        assert any(p.suffix == ".safetensors" for p in (sd / part).iterdir()), part
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        assert (sd / "tokenizer" / name).stat().st_size > 0
    assert json.loads((zoo["tiny-t2v"] / "model_index.json").read_text())["_class_name"] == "TextToVideoSDPipeline"
    assert json.loads((zoo["tiny-audioldm"] / "model_index.json").read_text())["_class_name"] == "AudioLDMPipeline"
    assert (zoo["tiny-vits"] / "vocab.json").exists()
    assert json.loads((zoo["tiny-musicgen"] / "config.json").read_text())["model_type"] == "musicgen"


def test_clip_tokenizer_covers_any_text(zoo: dict[str, Path]) -> None:
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(zoo["tiny-sd"] / "tokenizer")
    ids = tok("Ünïcode, emoji 🚀 and a LIGHTHOUSE at dusk").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.unk_token_id not in ids[1:-1]  # byte-level: nothing is out of vocabulary
    assert tok.decode(tok("a lighthouse at dusk").input_ids, skip_special_tokens=True) == "a lighthouse at dusk"


def test_tiny_chat_has_a_chat_template_and_generates(zoo: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(zoo["tiny-chat"])
    model = AutoModelForCausalLM.from_pretrained(zoo["tiny-chat"])
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi there"}], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n") and "hi there" in prompt
    inputs = tok(prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5 or int(out[0, -1]) == tok.eos_token_id


def test_builds_offline_into_an_empty_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    started = time.perf_counter()
    paths = build_zoo(["tiny-vits", "tiny-sd"], root=tmp_path)
    assert time.perf_counter() - started < 30
    assert paths["tiny-vits"] == tmp_path / "tiny-vits"
    assert (tmp_path / "tiny-sd" / "unet" / "config.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tiny-") and p.is_dir()]  # no temp leftovers


def test_concurrent_requests_build_once(tmp_path: Path, scratch_builders) -> None:
    calls: list[int] = []

    def slow(path: Path) -> None:
        calls.append(1)
        time.sleep(0.3)
        (path / "config.json").write_text("{}")

    scratch_builders("scratch-slow", slow)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(zoo_path("scratch-slow", root=tmp_path))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(set(results)) == 1 and (results[0] / "config.json").exists()


def test_version_bump_rebuilds_and_failures_leave_nothing(tmp_path: Path, scratch_builders) -> None:
    calls: list[str] = []

    def build(path: Path) -> None:
        calls.append("v")
        (path / "config.json").write_text("{}")

    scratch_builders("scratch-v", build, version="1")
    zoo_path("scratch-v", root=tmp_path)
    zoo_path("scratch-v", root=tmp_path)
    assert len(calls) == 1
    scratch_builders("scratch-v", build, version="2")
    zoo_path("scratch-v", root=tmp_path)
    assert len(calls) == 2

    def broken(path: Path) -> None:
        (path / "half.bin").write_bytes(b"x")
        raise RuntimeError("out of disk")

    scratch_builders("scratch-broken", broken)
    with pytest.raises(ModelLoadError, match="out of disk"):
        zoo_path("scratch-broken", root=tmp_path)
    assert not (tmp_path / "scratch-broken").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".scratch-broken-")]


def test_unknown_zoo_name() -> None:
    with pytest.raises(ModelNotFound, match="no tiny zoo checkpoint named 'tiny-nothing'"):
        zoo_path("tiny-nothing")


def test_command_line_lists_and_builds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.runtime.zoo.__main__ import main

    assert main(["list"]) == 0
    assert "tiny-sd" in capsys.readouterr().out
    assert main(["build", "tiny-vits", "--root", str(tmp_path)]) == 0
    assert "1 checkpoint(s) ready" in capsys.readouterr().out
    assert (tmp_path / "tiny-vits" / "config.json").exists()


def test_tokenizer_training_is_deterministic(tmp_path):
    """Rebuilding a checkpoint gives the same tokenizer files byte for byte."""
    from orchestrator.runtime.zoo import _tokenizers

    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        _tokenizers.clip_tokenizer().save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    tok = _tokenizers.clip_tokenizer()
    assert tok.decode(tok("a lighthouse at dusk")["input_ids"], skip_special_tokens=True).strip() == "a lighthouse at dusk"
