"""The Ray Serve executor on a real local Ray (one session for the module, 2 CPUs).

The same seeded workflow gives the same bytes and events as in-process; text-to-image calls of
concurrent runs share pipeline calls; a replica killed mid-call is retried elsewhere; a
cancelled run cancels its remote call; the embedded store is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ray.serve")

from ray_tools import registry as test_registry  # noqa: E402

from orchestrator.artifacts import RedisArtifactStore  # noqa: E402
from orchestrator.errors import ConfigError  # noqa: E402
from orchestrator.runtime import build_zoo, set_model_manager  # noqa: E402
from orchestrator.runtime.executors import RayExecutor, get_executor  # noqa: E402
from orchestrator.settings import Settings, get_settings  # noqa: E402
from orchestrator.workflow import Workflow  # noqa: E402

TESTS = Path(__file__).parent

CONFIG = """
proxy_location: Disabled
applications:
  - name: orchestrator-test
    route_prefix: null
    import_path: orchestrator.runtime.executors:build_app
    args:
      imports: ["ray_tools:registry"]
      groups:
        - name: images
          tools: ["image.generate"]
          num_replicas: 1
          ray_actor_options: {num_cpus: 0}
          max_ongoing_requests: 32
          batch: {max_batch_size: 8, batch_wait_timeout_s: 0.5}
        - name: flaky
          tools: ["raytest.*"]
          num_replicas: 2
          ray_actor_options: {num_cpus: 0}
        - name: rest
          tools: ["*"]
          num_replicas: 1
          ray_actor_options: {num_cpus: 0}
"""


@pytest.fixture(scope="session")
def ray_executor(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[RayExecutor]:
    """One local Ray (2 CPUs) and the test deployments, for the whole session."""
    build_zoo(["tiny-sd", "tiny-vits", "tiny-clip"])
    config = tmp_path_factory.mktemp("ray") / "serve.yaml"
    config.write_text(textwrap.dedent(CONFIG))
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(TESTS.parent), str(TESTS)) if p)
    # one torch thread in every replica (and in the seeded local run below): on some CPUs oneDNN gives
    # other float bytes with another thread count, and a local run shares its threads among the nodes
    # running at once, so only one thread each side makes "same seed, same bytes" hold everywhere
    executor = RayExecutor(Settings(redis_url=redis_url), config=config, num_cpus=2,
                           runtime_env={"env_vars": {"PYTHONPATH": path, "ORCHESTRATOR_TORCH_THREADS": "1"}})
    executor.start()
    try:
        yield executor
    finally:
        executor.shutdown()


@pytest.fixture
def stores(redis_url: str) -> Iterator[Any]:
    """Fresh Redis stores (unique prefixes), deleted afterwards."""
    made: list[RedisArtifactStore] = []

    def make() -> RedisArtifactStore:
        made.append(RedisArtifactStore(redis_url, prefix=f"test:ray:{uuid.uuid4().hex[:10]}:"))
        return made[-1]

    yield make
    for store in made:
        store.clear_prefix()
        store.close()


def _settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url)


def _by_node(events: list[Any]) -> dict[str | None, list[tuple[Any, ...]]]:
    seen: dict[str | None, list[tuple[Any, ...]]] = {}
    for e in events:
        seen.setdefault(e.node, []).append((e.type, getattr(e, "attempt", None), getattr(e, "step", None)))
    return seen


# ------------------------------------------------------------------ same bytes, same events


@pytest.mark.slow
def test_seeded_workflow_is_byte_identical_on_ray(ray_executor: RayExecutor, stores: Any, redis_url: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_TORCH_THREADS", "1")  # as in the replicas (see the ray_executor fixture)
    get_settings.cache_clear()
    old = set_model_manager(None)
    try:
        _byte_identical_on_ray(ray_executor, stores, redis_url)
    finally:
        set_model_manager(old)
        monkeypatch.delenv("ORCHESTRATOR_TORCH_THREADS")
        get_settings.cache_clear()


def _byte_identical_on_ray(ray_executor: RayExecutor, stores: Any, redis_url: str) -> None:
    wf = (Workflow("mixed").add_input("p", "text")
          .add_node("img", "image.generate", {"steps": 2, "width": 32, "height": 32}, inputs={"text": "p"})
          .add_node("vec", "image.embed", {}, inputs={"image": "img.image"})
          .add_node("say", "speech.synthesize", {}, inputs={"text": "p"})
          .add_output("image", "img.image").add_output("embedding", "vec.embedding").add_output("voice", "say.audio"))
    compiled = wf.compile(settings=_settings(redis_url))
    local = compiled.run({"p": "a lighthouse in fog"}, store=stores(), seed=11, executor="local")
    remote = compiled.run({"p": "a lighthouse in fog"}, store=stores(), seed=11, executor=ray_executor)

    assert local.ok and remote.ok, (local.errors, remote.errors)
    assert (local.executor, remote.executor) == ("local", "ray")
    assert {k: v.id for k, v in remote.outputs.items()} == {k: v.id for k, v in local.outputs.items()}
    assert remote.store.get_bytes(remote.outputs["voice"]) == local.store.get_bytes(local.outputs["voice"])
    # where the work ran
    replicas = {k: v.meta.provenance.model_extra.get("replica") for k, v in remote.outputs.items()}
    assert replicas["image"].startswith("images#") and replicas["voice"].startswith("rest#")
    assert replicas["embedding"].startswith("rest#")
    assert "replica" not in (local.outputs["image"].meta.provenance.model_extra or {})
    # the same events per node, in the same order (branches interleave either way)
    assert _by_node(remote.events) == _by_node(local.events)
    assert [e.type for e in remote.events if e.node == "img"].count("node_progress") == 2
    assert remote.events[0].executor == "ray" and local.events[0].executor == "local"


# ------------------------------------------------------------------ batching across runs


@pytest.mark.slow
def test_concurrent_text_to_image_runs_share_forward_passes(ray_executor: RayExecutor, stores: Any,
                                                            redis_url: str) -> None:
    wf = (Workflow("t2i").add_input("p", "text")
          .add_node("img", "image.generate", {"steps": 2, "width": 32, "height": 32}, inputs={"text": "p"})
          .add_output("image", "img.image"))
    compiled = wf.compile(settings=_settings(redis_url))
    prompts = [f"a {c} kite over the sea" for c in ("red", "blue", "green", "white", "black", "pink", "gold", "grey")]

    async def eight() -> list[Any]:
        return await asyncio.gather(*[
            compiled.arun({"p": p}, store=stores(), seed=100 + i, cache=False, executor=ray_executor)
            for i, p in enumerate(prompts)
        ])

    before = asyncio.run(ray_executor.stats("images"))
    batched = asyncio.run(eight())
    after = asyncio.run(ray_executor.stats("images"))
    passes = after["pipeline_calls"] - before["pipeline_calls"]
    assert all(r.ok for r in batched), [r.errors for r in batched]
    assert 1 <= passes < 8, after
    assert after["batched_calls"] - before["batched_calls"] == 8 and after["largest_batch"] > 1

    for i, (p, run) in enumerate(zip(prompts, batched, strict=True)):
        alone = compiled.run({"p": p}, store=stores(), seed=100 + i, cache=False, executor="local")
        got = np.asarray(run.load("image"), dtype=int)
        want = np.asarray(alone.load("image"), dtype=int)
        assert np.abs(got - want).max() <= 3, f"run {i} differs from its unbatched output"  # batched float rounding
        prov, want_prov = run.outputs["image"].meta.provenance, alone.outputs["image"].meta.provenance
        assert prov.seed == want_prov.seed and prov.inputs == want_prov.inputs


# ------------------------------------------------------------------ failures and cancellation


def _slow_workflow(steps: int, step_seconds: float, retries: int = 0) -> Workflow:
    return (Workflow("slow").add_input("t", "text")
            .add_node("s", "raytest.slow", {"steps": steps, "step_seconds": step_seconds}, inputs={"text": "t"},
                      retries=retries, retry_delay=0.5)
            .add_output("out", "s.text"))


@pytest.mark.slow
def test_replica_killed_mid_call_is_retried_elsewhere(ray_executor: RayExecutor, stores: Any, redis_url: str) -> None:
    compiled = _slow_workflow(steps=10, step_seconds=0.2, retries=3).compile(registry=test_registry,
                                                                              settings=_settings(redis_url))
    store = stores()
    killed: list[int] = []

    def on_event(event: Any) -> None:  # kill the replica that reports progress first
        if event.type == "node_progress" and not killed:
            killed.append(int(event.message.split("=")[1]))
            os.kill(killed[0], signal.SIGKILL)

    result = compiled.run({"t": "still here"}, store=store, cache=False, executor=ray_executor, on_event=on_event)

    assert result.ok, result.errors
    assert killed, "the tool never reported progress"
    text = result.load("out")
    assert text.startswith("STILL HERE from pid ") and int(text.rsplit(" ", 1)[1]) != killed[0]
    attempts = [e.attempt for e in result.events if e.type == "node_started"]
    assert attempts[:2] == [1, 2]
    # nothing is lost: the input and the output are in the store
    store.cache.clear()
    assert store.load(store.stat(result.outputs["out"].id)) == text
    input_id = result.outputs["out"].meta.provenance.inputs["text"]
    assert store.load(store.stat(input_id)) == "still here"


@pytest.mark.slow
def test_cancelling_a_run_cancels_its_remote_call(ray_executor: RayExecutor, stores: Any, redis_url: str) -> None:
    import threading
    import time

    compiled = _slow_workflow(steps=200, step_seconds=0.05).compile(registry=test_registry,
                                                                      settings=_settings(redis_url))
    store = stores()
    cancel = threading.Event()
    result = compiled.run({"t": "x"}, store=store, cache=False, executor=ray_executor, cancel=cancel,
                          on_event=lambda e: cancel.set() if e.type == "node_progress" else None)
    assert result.status == "cancelled"
    deadline = time.time() + 10
    record = None
    while record is None and time.time() < deadline:  # the replica's tool saw the cancel and stopped early
        record = store.get_record("raytest", "cancelled:s")
        time.sleep(0.1)
    assert record is not None and record["step"] < 200


@pytest.mark.slow
def test_calls_go_to_the_replica_that_holds_their_model(ray_executor: RayExecutor, stores: Any,
                                                        redis_url: str) -> None:
    import time

    def served_by(model: str) -> int:
        wf = (Workflow("which").add_input("t", "text")
              .add_node("w", "raytest.which", {"model": model}, inputs={"text": "t"}).add_output("o", "w.text"))
        result = wf.compile(registry=test_registry, settings=_settings(redis_url)).run(
            {"t": "x"}, store=stores(), cache=False, executor=ray_executor)
        assert result.ok, result.errors
        return int(result.load("o").split()[1])

    first = {m: served_by(m) for m in ("model-a", "model-b")}
    time.sleep(1.0)  # replicas report the models they hold to Serve's routers
    for _ in range(4):
        for model, pid in first.items():
            assert served_by(model) == pid, f"a call for {model} left the replica that holds it"


# ------------------------------------------------------------------ the embedded store


def test_ray_with_the_embedded_store_is_refused(local_store: Any, tmp_path: Path) -> None:
    settings = Settings(executor="ray", data_dir=tmp_path)
    wf = Workflow("one").add_input("t", "text").add_node("u", "text.template", {"template": "{0}!"},
                                                              inputs={"texts": "t"}).add_output("o", "u.text")
    executor = get_executor(settings)
    assert isinstance(executor, RayExecutor) and not executor.started
    with pytest.raises(ConfigError, match="needs the shared Redis store.*ORCHESTRATOR_REDIS_URL"):
        wf.compile(settings=settings).run({"t": "x"}, store=local_store)
    assert not executor.started  # refused before Ray was started


# ------------------------------------------------------------------ the command line


def _cli_workflow(tmp_path: Path) -> Path:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({
        "name": "cli-ray", "inputs": [{"name": "text", "modality": "text"}],
        "nodes": [{"id": "speak", "tool": "speech.synthesize", "inputs": {"text": "text"}}],
        "outputs": [{"name": "speech", "source": "speak.audio"}],
    }))
    return path


def test_cli_run_on_ray_with_the_embedded_store_is_refused(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    env = {"ORCHESTRATOR_DATA_DIR": str(tmp_path / "data"), "ORCHESTRATOR_REDIS_URL": "", "TQDM_DISABLE": "1"}
    result = CliRunner().invoke(app, ["run", "--executor", "ray", "--graph", str(_cli_workflow(tmp_path)),
                                      "-i", "text=hi", "--out", str(tmp_path / "out")], env=env)
    assert result.exit_code == 1
    assert "needs the shared Redis store" in " ".join(result.output.split())
    assert not (tmp_path / "out" / "run.json").exists()


@pytest.mark.slow
def test_cli_run_on_ray_names_the_executor(ray_executor: RayExecutor, redis_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    prefix = f"test:raycli:{uuid.uuid4().hex[:8]}:"
    env = {"ORCHESTRATOR_REDIS_URL": redis_url, "ORCHESTRATOR_KEY_PREFIX": prefix,
           "ORCHESTRATOR_RAY_CONFIG": str(ray_executor.config.path), "TQDM_DISABLE": "1"}
    try:
        result = CliRunner().invoke(app, ["run", "--executor", "ray", "--graph", str(_cli_workflow(tmp_path)),
                                          "-i", "text=hello", "--out", str(tmp_path / "out"), "--seed", "4", "-q"],
                                    env=env)
        assert result.exit_code == 0, result.output
        manifest = json.loads((tmp_path / "out" / "run.json").read_text())
        assert manifest["executor"] == "ray"
        assert manifest["outputs"]["speech"]["meta"]["provenance"]["replica"].startswith("rest#")
    finally:
        RedisArtifactStore(redis_url, prefix=prefix).clear_prefix()


@pytest.mark.slow
def test_a_data_dir_declared_shared_is_checked_then_used(ray_executor: RayExecutor, local_store: Any,
                                                         redis_url: str) -> None:
    shared = RayExecutor(Settings(redis_url=redis_url, ray_shared_data_dir=True), config=ray_executor.config)
    wf = (Workflow("shared-dir").add_input("t", "text")
          .add_node("w", "raytest.which", {"model": "m"}, inputs={"text": "t"}).add_output("o", "w.text"))
    # the run checks the directory first: a replica of each deployment must read a token file written there
    result = wf.compile(registry=test_registry).run({"t": "x"}, store=local_store, cache=False, executor=shared)
    assert result.ok, result.errors
    assert str(local_store.root.absolute()) in shared._checked_dirs
    assert int(result.load("o").split()[1]) != os.getpid()  # made by a replica, stored in the shared directory
    assert result.outputs["o"].meta.provenance.model_extra["replica"].startswith("flaky#")


@pytest.mark.slow
def test_an_unreachable_ray_cluster_is_a_clear_error(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = textwrap.dedent(f"""
        from orchestrator.errors import ExecutorUnavailable
        from orchestrator.runtime.executors import RayExecutor
        from orchestrator.settings import Settings
        try:
            RayExecutor(Settings(redis_url="redis://127.0.0.1:6379"), address="127.0.0.1:{port}").start()
        except ExecutorUnavailable as exc:
            print("REFUSED", exc)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert f"REFUSED cannot reach the Ray cluster at 127.0.0.1:{port}" in done.stdout, done.stdout + done.stderr
    assert "ORCHESTRATOR_RAY_ADDRESS" in done.stdout


def test_the_packaged_config_is_a_valid_serve_config() -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from orchestrator.runtime.executors import default_config_path, load_config

    schema = ServeDeploySchema.parse_obj(yaml.safe_load(default_config_path().read_text()))  # what `serve deploy` checks
    assert [app.name for app in schema.applications] == ["orchestrator"]
    config = load_config()
    assert config.args.group_for("image.generate").batch is not None
    assert config.args.group_for("speech.synthesize").name == "audio"
    assert config.args.group_for("image.caption").name == "encoders"


def test_a_config_with_mistakes_names_them(tmp_path: Path) -> None:
    from orchestrator.runtime.executors import load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""
        applications:
          - name: x
            import_path: orchestrator.runtime.executors:build_app
            args: {groups: [{name: a, tools: []}, {name: b, tools: ["*"], num_gpu: 1}]}
    """))
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    message = str(info.value)
    assert "bad.yaml" in message and "groups.0.tools" in message and "groups.1.num_gpu" in message


@pytest.mark.slow
def test_cli_deploy_applies_a_config(ray_executor: RayExecutor) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    result = CliRunner().invoke(app, ["deploy", str(ray_executor.config.path), "--address", "auto"])
    assert result.exit_code == 0, result.output
    assert "deployed 'orchestrator-test'" in result.output and "flaky (raytest.*)" in result.output


def test_executor_choice_local_by_default_and_by_name(redis_store: Any) -> None:
    from orchestrator.runtime.executors import LocalExecutor

    wf = (Workflow("pick").add_input("t", "text")
          .add_node("u", "text.template", {"template": "<{0}>"}, inputs={"texts": "t"}).add_output("o", "u.text"))
    compiled = wf.compile(settings=Settings())
    default = compiled.run({"t": "a"}, store=redis_store, cache=False)
    explicit = compiled.run({"t": "a"}, store=redis_store, cache=False, executor=LocalExecutor())
    assert default.executor == explicit.executor == "local" and default.load("o") == explicit.load("o") == "<a>"
    with pytest.raises(ConfigError, match="unknown executor 'gpu'"):
        compiled.run({"t": "a"}, store=redis_store, executor="gpu")
