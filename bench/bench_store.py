"""Artifact store throughput vs plain redis-py, side by side in one run (a benchmark, not a test).

For 1 KiB, 1 MiB and 32 MiB blobs it measures, on the same Redis server:

- put: ``RedisArtifactStore.put(blob, modality="embedding")`` (validates the bytes, hashes
  them for the content id, uploads the chunks, publishes the ref) vs ``SET key blob``;
- get: ``RedisArtifactStore.get_bytes(ref)`` vs ``GET key``.

Two plain baselines: ``redis-py`` as installed (with hiredis, which packs each command
into one new buffer), and ``redis-py zc``, the same client configured with the
pure-Python command packer the store uses (large values sent from the caller's
buffer, no copy): the second isolates the store's own overhead (hashing,
validation, the publish step). Each iteration runs the three contenders in a
shuffled order; each put stores a different blob (a counter is written into it),
so the idempotent "already stored" path never helps. Blobs are float32 ``.npy``
embeddings, the canonical form of the one modality whose validation does not
decode media, so the figures are the store's own cost. MB/s (10^6 bytes) come
from the median time per op, robust to the stalls of a shared machine; ratios
are store / baseline. Goal: store/redis-py >= 0.8 for 1 MiB and up.

Redis: ``--redis URL``, else ``ORCHESTRATOR_REDIS_URL``, else redis://127.0.0.1:6379,
else (or with ``--private``) a private ``redis-server`` started for the run. The chunk
size is the settings' (``ORCHESTRATOR_CHUNK_BYTES``) unless ``--chunk-bytes`` says otherwise.

Usage: .venv/bin/python bench/bench_store.py [--redis URL | --private] [--chunk-bytes N] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from collections import defaultdict

import numpy as np
import redis

from orchestrator._redis_server import PrivateRedis, redis_url
from orchestrator.artifacts import ArtifactRef, RedisArtifactStore, encode
from orchestrator.artifacts._redis import _zero_copy_packer
from orchestrator.settings import Settings

SIZES = [(1 << 10, "1 KiB", 1000), (1 << 20, "1 MiB", 100), (32 << 20, "32 MiB", 6)]  # (bytes, label, ops per round)
CONTENDERS = ("redis-py", "redis-py zc", "store")

Times = dict[str, list[float]]  # "put:store" -> seconds per op


def make_blob(base: np.ndarray, i: int) -> bytes:
    """A canonical float32 .npy of ``base``'s size whose first element is ``i`` (distinct per put)."""
    arr = base.copy()
    arr[0] = i
    return encode(arr)[0]


def one_round(store: RedisArtifactStore, clients: dict[str, redis.Redis], size: int, ops: int, seed: int) -> Times:
    base = np.random.default_rng(seed).random(max(1, (size - 128) // 4), dtype=np.float32)
    keys = {name: f"{store.prefix}plain:{name}:{uuid.uuid4().hex}" for name in clients}
    rng = random.Random(seed)
    times: Times = defaultdict(list)
    clock = time.perf_counter
    for i in range(ops):
        blob = make_blob(base, seed * 1_000_000 + i)
        refs: dict[str, ArtifactRef] = {}

        def put(name: str, blob: bytes = blob) -> object:
            if name == "store":
                return refs.setdefault("ref", store.put(blob, modality="embedding"))
            return clients[name].set(keys[name], blob)

        def get(name: str) -> object:
            return store.get_bytes(refs["ref"]) if name == "store" else clients[name].get(keys[name])

        order = rng.sample(CONTENDERS, len(CONTENDERS))  # the op right after a big write runs slower
        for op, call in (("put", put), ("get", get)):
            for name in order:
                t0 = clock()
                got = call(name)
                times[f"{op}:{name}"].append(clock() - t0)
                if op == "get":
                    assert got == blob
        for name, c in clients.items():  # keep the server's memory flat; not timed
            c.delete(keys[name])
        store.delete(refs["ref"])
    store.cache.clear()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default=None, help="Redis URL (default: ORCHESTRATOR_REDIS_URL or a local/private one)")
    parser.add_argument("--private", action="store_true", help="start a private redis-server (no other clients)")
    parser.add_argument("--chunk-bytes", type=int, default=None, help="chunk size (default: the settings' chunk_bytes)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    chunk = args.chunk_bytes or Settings().chunk_bytes

    with PrivateRedis() if args.private else redis_url(args.redis) as server:
        url = server.url if isinstance(server, PrivateRedis) else server
        clients = {"redis-py": redis.Redis.from_url(url), "redis-py zc": redis.Redis.from_url(url, **_zero_copy_packer())}
        store = RedisArtifactStore(url, prefix=f"bench:{uuid.uuid4().hex[:8]}:", chunk_bytes=chunk)
        version = clients["redis-py"].info("server")["redis_version"]
        print(f"redis {url} (server {version}), redis-py {redis.__version__}, store chunk size {chunk >> 10} KiB, "
              f"{args.rounds} rounds; MB/s from the median time per op")
        print(f"{'size':>7} {'op':>4} {'redis-py':>10} {'redis-py zc':>12} {'store':>9}   "
              f"{'store/redis-py':>14} {'store/zc':>9}")
        try:
            one_round(store, clients, 1 << 20, 10, seed=0)  # warm up connections and scripts
            for size, label, ops in SIZES:
                times: Times = defaultdict(list)
                for r in range(args.rounds):
                    for name, values in one_round(store, clients, size, ops, seed=r + 1).items():
                        times[name].extend(values)
                for op in ("put", "get"):
                    med = {name: statistics.median(times[f"{op}:{name}"]) for name in CONTENDERS}
                    rate = {name: size / med[name] / 1e6 for name in CONTENDERS}
                    print(f"{label:>7} {op:>4} {rate['redis-py']:>10.1f} {rate['redis-py zc']:>12.1f} {rate['store']:>9.1f}   "
                          f"{med['redis-py'] / med['store']:>14.2f} {med['redis-py zc'] / med['store']:>9.2f}")
        finally:
            store.clear_prefix()
            store.close()
            for c in clients.values():
                c.close()


if __name__ == "__main__":
    main()
