"""Ray executor benchmarks (not tests). Prints figures and ratios from one run.

1. Start-up of a local Ray with the deployments (seconds) and the memory of its processes
   (sum of RSS over the processes Ray started; shared pages count once per process).
2. Per-node overhead, Ray vs in-process, on a trivial node (text.template) and a tiny-model
   node (speech.synthesize on the tiny zoo): median of one-node runs, the difference per node.
3. Throughput of N concurrent text-to-image runs (tiny-sd) with 1 vs 2 replicas, batching
   off vs on (runs/s, and the ratio to 1 replica without batching).

Usage: .venv/bin/python bench/bench_ray.py [--redis URL] [--num-cpus 2] [--num-gpus 0.5] [--runs 16]
On a GPU machine, ``--num-gpus`` is each replica's ``num_gpus`` (fractions share one GPU;
see docs/ray.md for the memory caveat) and the model manager picks cuda.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

from orchestrator.artifacts import RedisArtifactStore
from orchestrator.runtime import build_zoo
from orchestrator.runtime.executors import RayExecutor
from orchestrator.settings import Settings
from orchestrator.workflow import Workflow


def _config(folder: Path, *, replicas: int, batch: bool, num_gpus: float) -> Path:
    batching = "batch: {max_batch_size: 16, batch_wait_timeout_s: 0.05}" if batch else ""
    path = folder / f"serve-{replicas}-{int(batch)}.yaml"
    path.write_text(textwrap.dedent(f"""
        proxy_location: Disabled
        applications:
          - name: orchestrator-bench
            route_prefix: null
            import_path: orchestrator.runtime.executors:build_app
            args:
              groups:
                - name: images
                  tools: ["image.generate"]
                  num_replicas: {replicas}
                  max_ongoing_requests: 64
                  ray_actor_options: {{num_cpus: 0, num_gpus: {num_gpus}}}
                  {batching}
                - name: rest
                  tools: ["*"]
                  num_replicas: 1
                  ray_actor_options: {{num_cpus: 0, num_gpus: {num_gpus}}}
    """))
    return path


def _ray_memory_bytes() -> int:
    import psutil

    total = 0
    for proc in psutil.Process().children(recursive=True):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def _median_seconds(compiled, inputs, store, executor, repeat: int) -> float:
    compiled.run(inputs, store=store, cache=False, seed=1, executor=executor)  # warm: models loaded, connections made
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = compiled.run(inputs, store=store, cache=False, seed=1, executor=executor)
        times.append(time.perf_counter() - started)
        assert result.ok, result.errors
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--num-gpus", type=float, default=0.0)
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads in this process; Ray gives replicas OMP_NUM_THREADS=num_cpus or 1")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.torch_threads)  # the same per-call threads on both sides of the comparison

    build_zoo(["tiny-sd", "tiny-vits"])
    settings = Settings(redis_url=args.redis)
    store = RedisArtifactStore(args.redis, prefix=f"bench:ray:{uuid.uuid4().hex[:8]}:")
    folder = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        # 1. start-up and memory
        started = time.perf_counter()
        executor = RayExecutor(settings, config=_config(folder, replicas=1, batch=False, num_gpus=args.num_gpus),
                               num_cpus=args.num_cpus).start()
        startup = time.perf_counter() - started
        print(f"1. local Ray + deployments: start-up {startup:.1f}s, "
              f"memory {_ray_memory_bytes() / 2**30:.2f} GiB (RSS of Ray's processes, idle replicas)")

        # 2. per-node overhead
        trivial = (Workflow("trivial").add_input("t", "text")
                   .add_node("n", "text.template", {"template": "<{0}>"}, inputs={"texts": "t"})
                   .add_output("o", "n.text").compile(settings=settings))
        tiny = (Workflow("tiny-model").add_input("t", "text")
                .add_node("n", "speech.synthesize", {}, inputs={"text": "t"})
                .add_output("o", "n.audio").compile(settings=settings))
        print(f"2. per-node overhead, median of {args.repeat} one-node runs:")
        for label, compiled in (("trivial (text.template)", trivial), ("tiny model (speech.synthesize)", tiny)):
            local = _median_seconds(compiled, {"t": "a short line"}, store, "local", args.repeat)
            remote = _median_seconds(compiled, {"t": "a short line"}, store, executor, args.repeat)
            print(f"   {label:32s} local {local * 1e3:7.1f} ms   ray {remote * 1e3:7.1f} ms   "
                  f"overhead {(remote - local) * 1e3:+7.1f} ms/node   ray/local {remote / local:5.1f}x")
        print(f"   memory with models loaded: {_ray_memory_bytes() / 2**30:.2f} GiB")

        # 3. throughput of concurrent image runs
        image = (Workflow("t2i").add_input("p", "text")
                 .add_node("img", "image.generate", {"steps": args.steps, "width": args.size, "height": args.size},
                           inputs={"text": "p"})
                 .add_output("image", "img.image").compile(settings=settings))

        async def concurrent(ex: RayExecutor) -> float:
            started = time.perf_counter()
            results = await asyncio.gather(*[
                image.arun({"p": f"a kite number {i}"}, store=store, seed=i, cache=False, executor=ex)
                for i in range(args.runs)])
            assert all(r.ok for r in results), [r.errors for r in results if not r.ok]
            return time.perf_counter() - started

        print(f"3. {args.runs} concurrent text-to-image runs ({args.size}x{args.size}, {args.steps} steps):")
        baseline = None
        for replicas, batch in ((1, False), (1, True), (2, False), (2, True)):
            ex = RayExecutor(settings, config=_config(folder, replicas=replicas, batch=batch, num_gpus=args.num_gpus))
            ex.start(redeploy=True)
            asyncio.run(concurrent(ex))  # warm every replica
            seconds = asyncio.run(concurrent(ex))
            rate = args.runs / seconds
            baseline = baseline or rate
            print(f"   {replicas} replica(s), batching {'on ' if batch else 'off'}: {seconds:6.2f}s  "
                  f"{rate:6.2f} runs/s  x{rate / baseline:4.2f} vs 1 replica unbatched")
        executor.shutdown()
    finally:
        store.clear_prefix()


if __name__ == "__main__":
    main()
