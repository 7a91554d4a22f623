"""The artifact store contract: one suite, run against the directory store and real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image

from orchestrator._redis_server import PrivateRedis, answers
from orchestrator.artifacts import (
    ArtifactRef,
    ArtifactStore,
    Audio,
    Limits,
    LocalArtifactStore,
    Modality,
    RedisArtifactStore,
    Video,
    content_id,
    encode,
    open_store,
)
from orchestrator.errors import (
    ArtifactDecodeError,
    ArtifactError,
    ArtifactNotFound,
    ArtifactTooLarge,
    ConfigError,
    StoreUnavailable,
)
from orchestrator.settings import Settings

TTL = 0.4  # seconds; the stores take fractions
WAIT = 0.7  # comfortably past TTL on a busy machine


def gradient(w: int = 16, h: int = 12) -> Image.Image:
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 50)], axis=2).astype(np.uint8))


def tone(seconds: float = 0.2, rate: int = 8000) -> Audio:
    return Audio((0.4 * np.sin(np.arange(int(seconds * rate)) * 0.2)).astype(np.float32), rate)


def text_blob(n: int, seed: int) -> bytes:
    """``n`` bytes of valid UTF-8 (so it can be stored as text), different per seed."""
    rng = np.random.default_rng(seed)
    return rng.integers(97, 123, size=n, dtype=np.uint8).tobytes()


def chunk_keys(store: RedisArtifactStore, ref: ArtifactRef) -> list[bytes]:
    return sorted(store.r.scan_iter(match=f"{store.prefix}art:{ref.hex}:*"))


OBJECTS: dict[str, Callable[[], Any]] = {
    "text": lambda: "hello, artifacts",
    "image": gradient,
    "audio": tone,
    "video": lambda: Video(np.full((4, 16, 16, 3), 99, np.uint8), 8),
    "embedding": lambda: np.linspace(-1, 1, 16, dtype=np.float32),
    "json": lambda: {"plan": [{"task": "text-to-image", "id": 0}]},
}


# ------------------------------------------------------------------ basic contract


@pytest.mark.parametrize("modality", list(OBJECTS))
def test_put_get_load_stat_exists_delete(store: ArtifactStore, modality: str):
    obj = OBJECTS[modality]()
    ref = store.put(obj)
    data = store.get_bytes(ref)
    assert ref.id == content_id(data) and ref.size == len(data) and ref.modality is Modality(modality)
    if modality == "video":  # re-encoding H.264 is not guaranteed byte-exact within one process
        assert store.load(ref).frames.shape == obj.frames.shape
    else:
        assert data == encode(obj)[0]
    assert store.stat(ref) == ref and store.stat(ref.id) == ref and store.stat(ref.hex) == ref
    assert store.exists(ref) and ref.id in store.ids() and store.verify(ref)
    store.cache.clear()
    loaded = store.load(ref)  # decoded from the stored bytes
    assert type(loaded) is type(store.cache.get(ref.id))
    assert store.delete(ref) is True
    assert not store.exists(ref) and ref.id not in store.ids()
    assert store.delete(ref) is False
    for call in (store.get_bytes, store.load, store.stat):
        with pytest.raises(ArtifactNotFound):
            call(ref)


def test_media_facts_and_provenance_are_stored(store: ArtifactStore):
    prov = {"tool": "image.generate", "model": "tiny-sd", "seed": 7, "params": {"steps": 2}}
    ref = store.put(gradient(20, 10), provenance=prov, meta={"width": 999, "caption": "a gradient"})
    store.cache.clear()
    info = store.stat(ref)
    assert (info.meta.width, info.meta.height) == (20, 10)  # read off the bytes, not the caller's claim
    assert info.meta.provenance is not None
    assert (info.meta.provenance.tool, info.meta.provenance.model, info.meta.provenance.seed) == ("image.generate", "tiny-sd", 7)
    assert info.meta.provenance.params == {"steps": 2} and info.meta.model_extra == {"caption": "a gradient"}
    audio = store.stat(store.put(tone(0.5, 16000)))
    assert (audio.meta.sample_rate, audio.meta.duration, audio.mime) == (16000, 0.5, "audio/wav")


def test_put_is_idempotent_and_keeps_the_first_metadata(store: ArtifactStore):
    first = store.put("same", provenance={"tool": "first"})
    again = store.put("same", provenance={"tool": "second"})
    as_bytes = store.put(b"same", modality="text")
    assert first.id == again.id == as_bytes.id
    for ref in (again, store.stat(first)):
        assert ref.meta.provenance is not None and ref.meta.provenance.tool == "first"
    assert store.ids() == [first.id]


def test_the_same_bytes_as_text_then_json_keep_the_first_modality(store: ArtifactStore):
    as_text = store.put('{"a":1}')
    as_json = store.put({"a": 1})
    assert as_json == as_text and as_json.modality is Modality.TEXT
    assert store.load(as_json) == '{"a":1}'  # not the dict: the cache follows the stored ref


def test_bytes_are_validated_and_canonicalized_on_put(store: ArtifactStore):
    import io

    buf = io.BytesIO()
    gradient().save(buf, "JPEG")
    ref = store.put(buf.getvalue(), modality="image")
    assert ref.mime == "image/png" and store.get_bytes(ref).startswith(b"\x89PNG")
    assert store.put(b'{"b":1, "a":2}', modality="json").id == content_id(b'{"a":2,"b":1}')


# ------------------------------------------------------------------ the decoded-object cache


def test_load_after_put_comes_from_the_cache(store: ArtifactStore):
    ref = store.put(gradient())
    hits = store.cache.hits
    first = store.load(ref)
    assert store.cache.hits == hits + 1
    assert store.load(ref) is first  # the very same object: nothing was decoded
    assert store.put(store.get_bytes(ref), modality="image").id == ref.id
    ref2 = store.put(encode(tone())[0], modality="audio")  # bytes validated on put are cached too
    assert ref2.id in store.cache


async def test_aload_after_aput_comes_from_the_cache(store: ArtifactStore):
    ref = await store.aput({"k": [1, 2]})
    hits = store.cache.hits
    assert await store.aload(ref) == {"k": [1, 2]} and store.cache.hits == hits + 1


def test_cached_objects_do_not_follow_the_callers_later_edits(store: ArtifactStore):
    img, vec, doc = gradient(), np.zeros(4, np.float32), {"a": [1]}
    refs = [store.put(img), store.put(vec), store.put(doc)]
    img.putpixel((0, 0), (1, 2, 3))
    vec[0] = 42.0  # the caller's array stays writeable
    doc["a"].append(2)
    loaded = [store.load(r) for r in refs]
    assert loaded[0].getpixel((0, 0)) == (0, 0, 50)
    assert loaded[1][0] == 0.0 and not loaded[1].flags.writeable
    assert loaded[2] == {"a": [1]}


def test_cache_is_bounded(tmp_path: Path):
    store = LocalArtifactStore(tmp_path, decoded_cache_bytes=10_000)
    refs = [store.put(np.full(1000, i, np.float32)) for i in range(5)]  # 4000 bytes each
    assert len(store.cache) == 2 and store.cache.nbytes <= 10_000
    assert refs[-1].id in store.cache and refs[0].id not in store.cache
    assert float(store.load(refs[0])[0]) == 0.0  # evicted, decoded again


def test_a_deleted_or_expired_artifact_is_not_served_from_the_cache(store: ArtifactStore):
    ref = store.put("short-lived", ttl=TTL)
    gone = store.put("deleted")
    store.delete(gone)
    time.sleep(WAIT)
    for r in (ref, gone):
        with pytest.raises(ArtifactNotFound):
            store.load(r)


# ------------------------------------------------------------------ TTL and pins


def test_ttl_expiry(store: ArtifactStore):
    short = store.put("expires", ttl=TTL)
    keep = store.put("stays")
    store.put_record("runs", "r1", {"status": "done"}, ttl=TTL)
    assert store.exists(short) and store.get_record("runs", "r1") == {"status": "done"}
    time.sleep(WAIT)
    assert not store.exists(short) and store.exists(keep)
    assert store.ids() == [keep.id]
    assert store.get_record("runs", "r1") is None and store.list_records("runs") == []
    with pytest.raises(ArtifactNotFound):
        store.get_bytes(short)


def test_default_ttl_and_expire(store: ArtifactStore):
    store.default_ttl = TTL
    ref = store.put("default ttl")
    forever = store.put("forever")
    store.expire(forever, None)
    time.sleep(WAIT)
    assert not store.exists(ref) and store.exists(forever)
    with pytest.raises(ArtifactNotFound):
        store.expire(ref, 10)


def test_repeated_put_extends_but_never_shortens_life(store: ArtifactStore):
    a = store.put("a", ttl=TTL)
    store.put("a", ttl=60)  # now lives at least a minute
    b = store.put("b")
    store.put("b", ttl=TTL)  # was forever: stays forever
    c = store.put("c", ttl=TTL)
    store.put("c")  # no TTL asked: forever
    time.sleep(WAIT)
    assert store.exists(a) and store.exists(b) and store.exists(c)


def test_redis_ttl_covers_every_key_of_a_chunked_artifact(redis_store: RedisArtifactStore):
    blob = text_blob(300_000, 1)  # ~5 chunks of 64 KiB
    ref = redis_store.put(blob, modality="text", ttl=2)
    ttls = redis_store.ttl(ref)
    assert len(ttls) == 1 + 5 and all(1 <= t <= 2 for t in ttls.values())
    redis_store.pin("run", [ref])
    assert set(redis_store.ttl(ref).values()) == {-1}
    redis_store.expire(ref, 1)
    assert all(0 <= t <= 1 for t in redis_store.ttl(ref).values())
    redis_store.r.pexpire(redis_store._k(ref.id), 1)  # everything goes together, so wait for all of it
    time.sleep(1.2)
    assert chunk_keys(redis_store, ref) == [] and not redis_store.exists(ref)


def test_pins_hold_artifacts_for_the_life_of_a_run(store: ArtifactStore):
    store.default_ttl = TTL
    a, b = store.put("a"), store.put("b")
    store.pin("run-1", [a, b])
    store.pin("run-2", [b])
    store.pin("run-1", ["sha256:" + "0" * 64])  # not stored: ignored
    time.sleep(WAIT)
    assert store.exists(a) and store.exists(b)
    store.unpin("run-1")  # a gets the default TTL back; b is still pinned by run-2
    time.sleep(WAIT)
    assert not store.exists(a) and store.exists(b)
    with store.pinned("run-3") as pins:
        pins.add(b)
        store.unpin("run-2")
        time.sleep(WAIT)
        assert store.exists(b)
    time.sleep(WAIT)
    assert not store.exists(b)


def test_unpin_without_default_ttl_keeps_artifacts(store: ArtifactStore):
    ref = store.put("kept", ttl=TTL)
    store.pin("run", [ref])
    store.unpin("run")
    time.sleep(WAIT)
    assert store.exists(ref)


def test_redis_pins_are_shared_between_processes(redis_url: str, redis_store: RedisArtifactStore):
    other = RedisArtifactStore(redis_url, prefix=redis_store.prefix, default_ttl=TTL)  # another process's view
    redis_store.default_ttl = TTL
    ref = redis_store.put("shared")
    redis_store.pin("run-A", [ref])
    other.pin("run-B", [ref])
    redis_store.unpin("run-A")
    time.sleep(WAIT)
    assert other.exists(ref)  # run-B, in the other process, still holds it
    other.unpin("run-B")
    time.sleep(WAIT)
    assert not redis_store.exists(ref)
    other.close()


# ------------------------------------------------------------------ records and events


def test_records(store: ArtifactStore):
    store.put_record("runs", "r1", {"status": "running"})
    store.put_record("runs", "r1", {"status": "done", "n": [1, 2]})
    store.put_record("runs", "weird key/with:colons and spaces", {"ok": True})
    store.put_record("chats", "r1", {"other": "namespace"})
    assert store.get_record("runs", "r1") == {"status": "done", "n": [1, 2]}
    assert store.list_records("runs") == ["r1", "weird key/with:colons and spaces"]
    assert store.get_record("runs", "weird key/with:colons and spaces") == {"ok": True}
    assert store.delete_record("runs", "r1") is True and store.delete_record("runs", "r1") is False
    assert store.get_record("runs", "r1") is None and store.get_record("runs", "never") is None
    assert store.list_records("runs") == ["weird key/with:colons and spaces"]
    assert store.list_records("empty") == [] and store.get_record("chats", "r1") == {"other": "namespace"}


def test_event_logs(store: ArtifactStore):
    assert [store.append_event("run-1", {"i": i}) for i in range(3)] == [1, 2, 3]
    assert store.append_event("run-2", {"other": True}) == 1
    assert store.read_events("run-1") == [(1, {"i": 0}), (2, {"i": 1}), (3, {"i": 2})]
    assert store.read_events("run-1", after=2) == [(3, {"i": 2})]
    assert store.read_events("run-1", after=3) == [] and store.read_events("nothing") == []
    assert store.append_event("run-1", {"i": 3}) == 4
    assert store.read_events("run-1", after=3) == [(4, {"i": 3})]


def test_a_batch_of_events_is_appended_in_order_in_one_call(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch):
    assert store.append_event("batch", {"i": 0}) == 1
    singles: list[dict] = []
    monkeypatch.setattr(store, "append_event", lambda stream, event: singles.append(event) or 0)
    assert store.append_events("batch", [{"i": 1}, {"i": 2}, {"i": 3}]) == [2, 3, 4]
    assert store.append_events("batch", []) == []
    assert singles == []  # not one append per event
    monkeypatch.undo()
    assert store.read_events("batch", after=1) == [(2, {"i": 1}), (3, {"i": 2}), (4, {"i": 3})]
    assert store.append_event("batch", {"i": 4}) == 5


def test_event_logs_expire(store: ArtifactStore):
    store.append_event("short", {"i": 0})
    store.append_event("kept", {"i": 0})
    store.expire_events("short", 0.3)
    store.expire_events("kept", 0.3)
    store.expire_events("kept", None)  # cancelled again
    assert store.read_events("short") == [(1, {"i": 0})]
    time.sleep(0.5)
    assert store.read_events("short") == []
    assert store.append_event("short", {"i": 1}) == 1  # a fresh log
    assert store.read_events("kept") == [(1, {"i": 0})]


def test_concurrent_event_appends_get_unique_sequence_numbers(store: ArtifactStore):
    with ThreadPoolExecutor(8) as pool:
        seqs = list(pool.map(lambda i: store.append_event("busy", {"i": i}), range(80)))
    assert sorted(seqs) == list(range(1, 81))
    events = store.read_events("busy")
    assert [n for n, _ in events] == list(range(1, 81))
    assert sorted(e["i"] for _, e in events) == list(range(80))


# ------------------------------------------------------------------ concurrency


def _blobs() -> list[bytes]:
    # small ones, and ones larger than the Redis fixture's 64 KiB chunks
    return [text_blob(n, seed) for seed, n in enumerate([10, 1000, 70_000, 200_000, 5, 130_000])]


def test_threads_put_and_get_same_and_different_blobs(store: ArtifactStore):
    blobs = _blobs()
    expected = {content_id(b): b for b in blobs}
    seen: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for j in range(12):
            blob = blobs[(i + j) % len(blobs)] if j % 2 else blobs[0]  # everyone also hammers one id
            ref = store.put(blob, modality="text")
            got = store.get_bytes(ref)
            with lock:
                seen.append((ref.id, got))

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(worker, range(10)))
    assert len(seen) == 120
    for artifact_id, got in seen:
        assert hashlib.sha256(got).hexdigest() == artifact_id[7:] and got == expected[artifact_id]
    assert store.ids() == sorted(expected)


async def test_asyncio_tasks_put_and_get_same_and_different_blobs(store: ArtifactStore):
    blobs = _blobs()

    async def task(i: int) -> list[tuple[str, bytes]]:
        out = []
        for j in range(6):
            ref = await store.aput(blobs[(i * j) % len(blobs)], modality="text")
            out.append((ref.id, await store.aget_bytes(ref)))
            assert await store.aexists(ref) and (await store.astat(ref)).size == len(out[-1][1])
        return out

    results = await asyncio.gather(*(task(i) for i in range(12)))
    for artifact_id, got in (pair for res in results for pair in res):
        assert content_id(got) == artifact_id
    assert await store.aload(artifact_id) == got.decode()
    assert await store.adelete(artifact_id) and not await store.aexists(artifact_id)


def test_racing_writers_of_one_large_blob_never_show_a_reader_partial_bytes(store: ArtifactStore):
    blob = text_blob(400_000, 99)  # 7 chunks in Redis
    artifact_id = content_id(blob)
    stop = threading.Event()
    reads: list[int] = []
    bad: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                got = store.get_bytes(artifact_id)
            except ArtifactNotFound:
                continue
            reads.append(len(got))
            if content_id(got) != artifact_id:
                bad.append(f"{len(got)} bytes that hash to something else")

    def writer() -> None:
        store.put(blob, modality="text")

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        for _ in range(6):  # each round: the blob is absent, and 6 writers race to store it
            store.delete(artifact_id)
            with ThreadPoolExecutor(6) as pool:
                list(pool.map(lambda _: writer(), range(6)))
            assert store.get_bytes(artifact_id) == blob
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not bad and reads
    if isinstance(store, RedisArtifactStore):  # one set of chunks; the losers' uploads are gone
        assert len(chunk_keys(store, ArtifactRef.for_bytes(blob, "text"))) == 7
        assert list(store.r.scan_iter(match=f"{store.prefix}tmp:*")) == []


# ------------------------------------------------------------------ bad input leaves the store as it was


BAD_BYTES = [
    (b"", "image", ArtifactDecodeError, "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00", "image", ArtifactDecodeError, "truncated"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio", ArtifactDecodeError, "truncated|corrupt"),
    (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", "video", ArtifactDecodeError, "truncated|corrupt|no video"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00", "image", ArtifactDecodeError, "declared image but the bytes are audio"),
    (b"\xff\xfe not utf8", "text", ArtifactDecodeError, "UTF-8"),
    (b'{"a": ', "json", ArtifactDecodeError, "malformed"),
    (b"x" * 2000, "text", ArtifactTooLarge, "byte limit"),
]


@pytest.mark.parametrize(("data", "modality", "error", "reason"), BAD_BYTES, ids=[f"{m}:{r}" for _, m, _, r in BAD_BYTES])
def test_bad_input_is_refused_and_the_store_is_untouched(store: ArtifactStore, data, modality, error, reason):
    kept = store.put("already here")
    store.limits = Limits(max_bytes=1000, max_pixels=10_000)
    before = store.ids()
    with pytest.raises(error, match=reason):
        store.put(data, modality=modality)
    assert store.ids() == before and store.get_bytes(kept) == b"already here"


def test_oversized_objects_and_bad_arguments_are_refused(store: ArtifactStore):
    store.limits = Limits(max_pixels=100, max_audio_seconds=0.1, max_video_seconds=0.1)
    with pytest.raises(ArtifactTooLarge, match="pixel limit"):
        store.put(gradient())
    with pytest.raises(ArtifactTooLarge, match="duration limit"):
        store.put(tone(0.5))
    with pytest.raises(ArtifactDecodeError, match="explicit modality"):
        store.put(b"bytes")
    with pytest.raises(ArtifactError, match="unknown modality 'banana'"):
        store.put(b"bytes", modality="banana")
    with pytest.raises(ArtifactError, match="cannot infer a modality"):
        store.put(object())
    with pytest.raises(ArtifactError, match="invalid artifact metadata"):
        store.put("x", meta={"width": "wide"})
    assert store.ids() == []


@pytest.mark.parametrize("bad_id", ["sha256:" + "0" * 64, "0" * 64, "sha256:xyz", "", "../../etc/passwd", "sha256:" + "A" * 64])
def test_unknown_and_malformed_ids(store: ArtifactStore, bad_id: str):
    assert store.exists(bad_id) is False
    for call in (store.get_bytes, store.load, store.stat, store.verify):
        with pytest.raises(ArtifactNotFound):
            call(bad_id)
    if len(bad_id.removeprefix("sha256:")) == 64 and bad_id[-1] == "0":
        assert store.delete(bad_id) is False
    else:
        with pytest.raises(ArtifactNotFound, match="not an artifact id"):
            store.delete(bad_id)


# ------------------------------------------------------------------ backend failures


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_redis_down_is_store_unavailable_never_a_redis_exception():
    store = RedisArtifactStore(f"redis://127.0.0.1:{_closed_port()}/0", prefix="down:")
    some_id = "sha256:" + "1" * 64
    calls: list[Callable[[], Any]] = [
        lambda: store.put("x"), lambda: store.get_bytes(some_id), lambda: store.load(some_id),
        lambda: store.stat(some_id), lambda: store.exists(some_id), lambda: store.delete(some_id),
        lambda: store.expire(some_id, 5), lambda: store.ids(), lambda: store.pin("r", [some_id]),
        lambda: store.unpin("r"), lambda: store.put_record("n", "k", {}), lambda: store.get_record("n", "k"),
        lambda: store.list_records("n"), lambda: store.append_event("s", {}), lambda: store.read_events("s"),
        store.ping, lambda: store.ttl(some_id),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable, match="unavailable") as info:
            call()
        assert not isinstance(info.value, redis.RedisError)
        assert isinstance(info.value.__cause__, redis.ConnectionError)


def test_redis_store_recovers_when_the_server_forgets_its_scripts():
    with PrivateRedis() as server:  # SCRIPT FLUSH is server-wide: not on a shared Redis
        store = RedisArtifactStore(server.url, prefix="flush:", chunk_bytes=1024)
        first = store.put("before")
        redis.Redis.from_url(server.url).script_flush()  # what a restart does
        second = store.put(text_blob(5000, 3), modality="text")
        store.pin("run", [first])
        assert store.get_bytes(second) == text_blob(5000, 3) and store.delete(first)
        store.close()


def test_a_bad_redis_url_is_a_config_error():
    with pytest.raises(ConfigError, match="invalid Redis URL"):
        RedisArtifactStore("http://not-redis")
    with pytest.raises(ConfigError, match="chunk_bytes"):
        RedisArtifactStore(chunk_bytes=0)


async def test_redis_down_async_twins_raise_store_unavailable():
    store = RedisArtifactStore(f"redis://127.0.0.1:{_closed_port()}/0", prefix="down:")
    with pytest.raises(StoreUnavailable):
        await store.aput("x")
    with pytest.raises(StoreUnavailable):
        await store.aget_bytes("sha256:" + "1" * 64)


def _probe_read_only(root: Path, artifact_id: str) -> dict[str, str]:
    store = LocalArtifactStore(root)
    results = {}
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("put", lambda: store.put("x")), ("record", lambda: store.put_record("n", "k", {})),
        ("event", lambda: store.append_event("s", {})), ("ping", store.ping),
        ("expire", lambda: store.expire(artifact_id, None)),
    ]
    for name, call in calls:
        try:
            call()
            results[name] = "no error"
        except StoreUnavailable:
            results[name] = "StoreUnavailable"
        except Exception as exc:  # noqa: BLE001 - reported, so the assertion shows what leaked
            results[name] = f"{type(exc).__name__}: {exc}"
    results["read"] = store.get_bytes(artifact_id).decode()
    return results


def _as_unprivileged_user(fn: Callable[[], dict[str, str]]) -> dict[str, str]:
    """Root ignores file permissions: run ``fn`` in a forked child that dropped to ``nobody``."""
    if os.geteuid() != 0:
        return fn()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, so the interpreter it already has keeps working
        code = 1
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, json.dumps(fn()).encode())
            code = 0
        except BaseException:
            import traceback

            os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, f"the unprivileged probe failed:\n{out.decode()}"
    return json.loads(out)


def test_local_store_on_a_read_only_directory_is_store_unavailable():
    parent = Path(tempfile.mkdtemp(prefix="orch-ro-"))
    try:
        root = parent / "artifacts"
        ref = LocalArtifactStore(root).put("written before")
        for d in [root, *root.rglob("*")]:
            d.chmod(0o555 if d.is_dir() else 0o444)
        parent.chmod(0o755)
        results = _as_unprivileged_user(lambda: _probe_read_only(root, ref.id))
        assert results == {
            "put": "StoreUnavailable", "record": "StoreUnavailable", "event": "StoreUnavailable",
            "ping": "StoreUnavailable", "expire": "StoreUnavailable", "read": "written before",
        }
    finally:
        for d in [parent, *parent.rglob("*")]:
            if d.is_dir():
                d.chmod(0o755)
        shutil.rmtree(parent, ignore_errors=True)


def test_local_store_under_a_file_is_store_unavailable(tmp_path: Path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="cannot create the artifact directory"):
        LocalArtifactStore(tmp_path / "file" / "artifacts")


def test_local_store_with_its_directory_removed_is_store_unavailable(tmp_path: Path):
    store = LocalArtifactStore(tmp_path / "a")
    shutil.rmtree(tmp_path / "a")
    (tmp_path / "a").write_text("now a file")
    for call in (lambda: store.put("x"), lambda: store.put_record("n", "k", {}), lambda: store.append_event("s", {}), store.ping):
        with pytest.raises(StoreUnavailable):
            call()


# ------------------------------------------------------------------ open_store


def test_open_store_picks_redis_when_a_url_is_set(redis_url: str, redis_prefix: str):
    settings = Settings(
        redis_url=redis_url, key_prefix=redis_prefix, chunk_bytes=4096, max_artifact_bytes=5000,
        max_image_pixels=77, artifact_ttl_seconds=9,
    )
    store = open_store(settings)
    assert isinstance(store, RedisArtifactStore)
    try:
        assert (store.prefix, store.chunk_bytes, store.default_ttl) == (redis_prefix, 4096, 9)
        assert store.limits == Limits(max_bytes=5000, max_pixels=77, max_audio_seconds=3600.0, max_video_seconds=1800.0)
        ref = store.put("through open_store")
        assert redis.Redis.from_url(redis_url).exists(f"{redis_prefix}art:{ref.hex}")
    finally:
        store.clear_prefix()
        store.close()


def test_open_store_defaults_to_the_embedded_directory(tmp_path: Path):
    store = open_store(Settings(redis_url=None, data_dir=tmp_path / "data", max_audio_seconds=12))
    assert isinstance(store, LocalArtifactStore)
    assert store.root == tmp_path / "data" / "artifacts" and store.limits.max_audio_seconds == 12
    ref = store.put("embedded")
    assert open_store(Settings(redis_url=None, data_dir=tmp_path / "data")).get_bytes(ref) == b"embedded"


def test_test_redis_is_real(redis_url: str):
    assert answers(redis_url)


@pytest.mark.parametrize("size", [10, 64 << 10, (64 << 10) * 3 + 123])
def test_byte_ranges_match_the_full_bytes(store: ArtifactStore, size: int):
    """Ranges within one chunk, across chunk boundaries and at the ends (the Redis fixture's chunks are 64 KiB)."""
    import numpy as np

    data = np.random.default_rng(size).standard_normal(max(1, size // 4)).astype(np.float32)
    ref = store.put(data, modality="embedding")
    full = store.get_bytes(ref)
    n = len(full)
    spans = [(0, 0), (0, n - 1), (n - 1, n - 1), (n // 3, 2 * n // 3), (max(0, n - 70000), n - 1), (5, n + 100)]
    for start, end in spans:
        assert store.get_range(ref, start, end) == full[start : end + 1], (start, end)
    store.delete(ref)
    with pytest.raises(ArtifactNotFound):
        store.get_range(ref, 0, 1)


# ---------------------------------------------------------------------- speed paths
def test_small_artifacts_live_in_their_ref_document(tmp_path: Path):
    store = LocalArtifactStore(tmp_path / "a", inline_bytes=64)
    small = store.put(b"tiny bytes", modality="text")
    large = store.put(b"x" * 1000, modality="text")
    small_files = sorted(p.name for p in (tmp_path / "a" / "blobs").rglob(f"{small.id[7:]}*"))
    large_files = sorted(p.name for p in (tmp_path / "a" / "blobs").rglob(f"{large.id[7:]}*"))
    assert small_files == [f"{small.id[7:]}.json"]  # one file, no separate data file
    assert len(large_files) == 2
    fresh = LocalArtifactStore(tmp_path / "a")  # another process: no decoded cache
    assert fresh.get_bytes(small) == b"tiny bytes" and fresh.load(small) == "tiny bytes"
    assert fresh.get_range(small, 5, 7) == b"byt"
    assert fresh.verify(small)
    assert store.put(b"tiny bytes", modality="text") == small  # same bytes, same ref
    assert fresh.delete(small) and not fresh.exists(small)
    with pytest.raises(ArtifactNotFound):
        fresh.get_bytes(small)


def test_pinning_what_never_expires_writes_nothing(tmp_path: Path):
    store = LocalArtifactStore(tmp_path / "a")
    ref = store.put("kept forever")
    doc = store._refpath(ref.id)
    before = doc.stat()
    time.sleep(0.01)
    store.pin("run-1", [ref])
    store.pin("run-2", [ref])
    store.unpin("run-1")
    store.unpin("run-2")
    after = doc.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert store.expires_at(ref) is None


def _ttl_of(store: ArtifactStore, ref: ArtifactRef) -> float | None:
    if isinstance(store, LocalArtifactStore):
        exp = store.expires_at(ref)
        return None if exp is None else exp - time.time()
    ttl = store.ttl(ref)
    return None if max(ttl.values()) < 0 else float(min(ttl.values()))


@pytest.mark.parametrize("defer", [False, True])
@pytest.mark.parametrize("backend", ["local", "redis"])
def test_put_pinned_keeps_the_artifact_until_the_run_lets_go(backend: str, defer: bool, tmp_path: Path,
                                                             request: pytest.FixtureRequest):
    if backend == "local":
        store: ArtifactStore = LocalArtifactStore(tmp_path / "a", default_ttl=300)
    else:
        redis_url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        store = RedisArtifactStore(redis_url, prefix=prefix, default_ttl=300)
    try:
        ref = store.put("made by a run", pin="run-a", defer=defer)
        assert _ttl_of(store, ref) is None  # pinned: no TTL while the run lives
        again = store.put("made by a run", pin="run-b", defer=defer)  # a second run makes the same bytes
        assert again == ref and _ttl_of(store, ref) is None
        store.unpin("run-a")
        assert _ttl_of(store, ref) is None  # run-b still holds it
        store.unpin("run-b")
        ttl = _ttl_of(store, ref)
        assert ttl is not None and 200 < ttl <= 300  # the default TTL is back
        plain = store.put("not pinned")
        ttl = _ttl_of(store, plain)
        assert ttl is not None and 200 < ttl <= 300
    finally:
        if isinstance(store, RedisArtifactStore):
            store.clear_prefix()


def test_wait_events_returns_as_soon_as_an_event_is_appended(store: ArtifactStore):
    store.append_event("live", {"i": 0})
    assert store.wait_events("live", after=0, timeout=0.1) == [(1, {"i": 0})]  # already there: no wait
    started = time.monotonic()
    assert store.wait_events("live", after=1, timeout=0.3) == []  # nothing new: waits out the timeout
    assert 0.25 <= time.monotonic() - started < 2
    timer = threading.Timer(0.3, lambda: store.append_event("live", {"i": 1}))
    timer.start()
    started = time.monotonic()
    assert store.wait_events("live", after=1, timeout=10) == [(2, {"i": 1})]
    waited = time.monotonic() - started
    assert 0.2 < waited < 2, f"woke after {waited:.2f}s"
    timer.join()


def test_stat_many_finds_and_pins_what_exists(store: ArtifactStore):
    a, b, c = store.put("first", ttl=60), store.put("second", ttl=60), store.put("third", ttl=60)
    missing = "sha256:" + "0" * 64
    assert store.stat_many([a, missing, b.id], pin="run-s") == [a, None, b]
    assert _ttl_of(store, a) is None and _ttl_of(store, b) is None  # pinned: no TTL while the run lives
    ttl = _ttl_of(store, c)
    assert ttl is not None and ttl > 30  # not asked for: untouched
    assert store.stat_many([c]) == [c] and _ttl_of(store, c) is not None  # no pin= : no pin
    assert store.stat_many([]) == []


def test_get_record_refs_resolves_and_pins_the_ids_a_record_holds(store: ArtifactStore):
    a, b, c = store.put("one", ttl=60), store.put("two", ttl=60), store.put("three", ttl=60)
    missing = "sha256:" + "0" * 64
    store.put_record("idx", "k", {"single": a.id, "many": [b.id, missing]})
    record, refs = store.get_record_refs("idx", "k", pin="run-r")
    assert record == {"single": a.id, "many": [b.id, missing]}
    assert refs == {a.id: a, b.id: b, missing: None}
    assert _ttl_of(store, a) is None and _ttl_of(store, b) is None  # found: pinned while the run lives
    assert _ttl_of(store, c) is not None  # not in the record: untouched
    store.unpin("run-r")
    assert store.get_record_refs("idx", "absent") is None
    store.put_record("idx", "empty", {})
    assert store.get_record_refs("idx", "empty") is None
    store.put_record("idx", "junk", {"x": "not an id"})
    with pytest.raises(ArtifactError):
        store.get_record_refs("idx", "junk")
    store.put_record("idx", "numbers", {"x": [1, 2]})
    with pytest.raises(ArtifactError):
        store.get_record_refs("idx", "numbers")


def test_get_record_refs_many_reads_several_records_at_once(store: ArtifactStore):
    store.default_ttl = 60  # what a released pin gives back
    a, b, c = store.put("uno", ttl=60), store.put("dos", ttl=60), store.put("tres", ttl=60)
    store.put_record("idx", "k1", {"out": a.id})
    store.put_record("idx", "k2", {"out": [b.id, c.id]})
    store.put_record("idx", "junk", {"x": "not an id"})
    found = store.get_record_refs_many("idx", ["k1", "absent", "junk", "k2"], pin="run-m")
    assert found == [({"out": a.id}, {a.id: a}), None, None, ({"out": [b.id, c.id]}, {b.id: b, c.id: c})]
    assert all(_ttl_of(store, r) is None for r in (a, b, c))  # found: pinned while the run lives
    store.unpin("run-m")
    assert all(_ttl_of(store, r) is not None for r in (a, b, c))
    assert store.get_record_refs_many("idx", []) == []


# ------------------------------------------------------------------ write-behind


def _twin(store: ArtifactStore) -> ArtifactStore:
    """Another store object on the same backend (what another process sees)."""
    if isinstance(store, RedisArtifactStore):
        return RedisArtifactStore(store.url, prefix=store.prefix, chunk_bytes=store.chunk_bytes)
    assert isinstance(store, LocalArtifactStore)
    return LocalArtifactStore(store.root)


def test_a_deferred_put_is_stored_by_the_next_call_to_the_store(store: ArtifactStore):
    other = _twin(store)
    ref = store.put("later", pin="run", defer=True)
    assert store.pending_writes == 1 and not other.exists(ref)
    assert store.load(ref) == "later" and store.pending_writes == 1  # served from memory: the run's own pin
    store.put_record("ns", "k", {"out": ref.id})  # a record naming it: the artifact is stored first
    assert store.pending_writes == 0
    assert other.get_record_refs("ns", "k") == ({"out": ref.id}, {ref.id: ref})
    assert other.get_bytes(ref) == b"later"


def test_flush_stores_deferred_puts_in_one_round_trip(redis_store: RedisArtifactStore,
                                                      monkeypatch: pytest.MonkeyPatch):
    refs = [redis_store.put(f"item {i}", pin="run", defer=True) for i in range(30)]
    sent: list[int] = []
    pipeline = redis_store.r.pipeline

    def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute
        pipe.execute = lambda *a, **k: sent.append(len(pipe)) or execute(*a, **k)
        return pipe

    monkeypatch.setattr(redis_store.r, "pipeline", counted_pipeline)
    redis_store.unpin("run")  # stores them, then releases the pins, in one pipeline
    assert sent == [2]  # one script stores the puts, one releases the pins
    assert all(r is not None for r in _twin(redis_store).stat_many(refs))
    assert not redis_store.r.exists(f"{redis_store.prefix}pin:run")


def test_deferred_puts_of_stored_bytes_pin_them_or_only_extend_their_life(store: ArtifactStore):
    kept, short, long = store.put("kept", ttl=60), store.put("short", ttl=60), store.put("long", ttl=600)
    store.put("kept", pin="run", defer=True)
    store.put("short", ttl=300, defer=True)
    store.put("long", ttl=300, defer=True)
    store.put("new", pin="run", defer=True)
    fresh = store.put("fresh", ttl=300, defer=True)
    store.flush()
    assert _ttl_of(store, kept) is None  # pinned: its TTL is gone
    assert 200 < (_ttl_of(store, short) or 0) <= 300 and 500 < (_ttl_of(store, long) or 0) <= 600  # never shortened
    assert 200 < (_ttl_of(store, fresh) or 0) <= 300 and _twin(store).load(fresh) == "fresh"
    store.default_ttl = 100
    store.unpin("run")
    assert 50 < (_ttl_of(store, kept) or 0) <= 100  # released: the default TTL back


def test_deferred_puts_stored_by_their_runs_unpin_end_as_the_release_leaves_them(store: ArtifactStore):
    """The puts a run deferred are stored by its unpin (Redis: with the release, in one pipeline): new ones get
    the default TTL at once, unless another run pins the same bytes; nothing of the run's pins is left."""
    store.default_ttl = 300
    held = store.put("held by b", pin="run-b")
    gone = store.put("pinned by b, then deleted", pin="run-b")
    store.delete(gone)
    fresh = store.put("fresh from a", pin="run-a", defer=True)
    store.put("held by b", pin="run-a", defer=True)
    store.put("pinned by b, then deleted", pin="run-a", defer=True)  # made again: run-b's pin still holds it
    store.unpin("run-a")
    other = _twin(store)
    assert other.load(fresh) == "fresh from a" and 200 < (_ttl_of(store, fresh) or 0) <= 300
    assert _ttl_of(store, held) is None and _ttl_of(store, gone) is None  # run-b still holds them
    store.unpin("run-b")
    assert 200 < (_ttl_of(store, held) or 0) <= 300 and 200 < (_ttl_of(store, gone) or 0) <= 300
    if isinstance(store, RedisArtifactStore):
        assert not store.r.exists(f"{store.prefix}pin:run-a", f"{store.prefix}pinned:{fresh.hex}")


def test_a_deferred_pin_of_an_artifact_chunked_elsewhere_clears_every_chunks_ttl(redis_store: RedisArtifactStore):
    blob = text_blob(5000, 7)
    smaller = RedisArtifactStore(redis_store.url, prefix=redis_store.prefix, chunk_bytes=1024)
    ref = smaller.put(blob, modality="text", ttl=60)  # five chunks, each with the TTL
    redis_store.put(blob, modality="text", pin="run", defer=True)  # one chunk here: the batch script pins it
    redis_store.flush()
    assert len(redis_store.ttl(ref)) == 6 and set(redis_store.ttl(ref).values()) == {-1}
    redis_store.unpin("run")


def test_more_deferred_puts_than_one_script_takes_are_all_stored(redis_store: RedisArtifactStore):
    from orchestrator.artifacts._redis import PUT_SMALL_BATCH

    refs = [redis_store.put(f"many {i}", pin="run", defer=True) for i in range(PUT_SMALL_BATCH + 3)]
    redis_store.default_ttl = 100
    redis_store.flush()
    assert all(_ttl_of(redis_store, r) is None for r in refs)
    redis_store.unpin("run")
    other = _twin(redis_store)
    assert [other.load(r) for r in refs] == [f"many {i}" for i in range(PUT_SMALL_BATCH + 3)]
    assert all(50 < (_ttl_of(redis_store, r) or 0) <= 100 for r in refs)


def test_deferred_puts_beyond_write_behind_bytes_are_written_at_once(tmp_path: Path):
    store, other = LocalArtifactStore(tmp_path / "a", write_behind_bytes=100), LocalArtifactStore(tmp_path / "a")
    first = store.put("x" * 60, defer=True)
    big = store.put("y" * 200, defer=True)  # over the limit alone: written now (after what was queued)
    assert store.pending_writes == 0 and other.exists(first) and other.exists(big)
    second = store.put("z" * 60, defer=True)
    store.put("w" * 60, defer=True)  # the queue would pass the limit: what it holds is written first
    assert store.pending_writes == 1 and other.exists(second)


def test_a_failed_flush_raises_and_serves_nothing_it_did_not_store(tmp_path: Path):
    store = LocalArtifactStore(tmp_path / "a")
    ref = store.put("lost", pin="run", defer=True)
    shutil.rmtree(tmp_path / "a")
    (tmp_path / "a").write_text("now a file")
    with pytest.raises(StoreUnavailable):
        store.flush()
    assert store.pending_writes == 0
    with pytest.raises(StoreUnavailable):  # not the deferred object from memory
        store.load(ref)


def test_a_run_whose_deferred_puts_another_caller_failed_to_store_fails_at_unpin(tmp_path: Path):
    """The failed batch raised in whoever flushed it; the run that deferred the puts learns it too."""
    root = tmp_path / "a"
    store = LocalArtifactStore(root)
    store.put("lost", pin="run-1", defer=True)
    shutil.rmtree(root)
    root.write_text("now a file")
    with pytest.raises(StoreUnavailable):
        store.flush()  # another run's call, say
    root.unlink()
    root.mkdir()
    with pytest.raises(ArtifactError, match="run-1"):
        store.unpin("run-1")
    store.unpin("run-2")  # other runs are not touched


def test_deferred_puts_race_readers_in_other_threads(store: ArtifactStore):
    """Every reader that asks for a deferred artifact finds it, whichever thread flushes."""
    refs = [store.put(f"race {i}", pin="run", defer=True) for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda r: store.get_bytes(r), refs))
    assert found == [f"race {i}".encode() for i in range(40)] and store.pending_writes == 0


def test_the_same_bytes_deferred_twice_by_a_run_are_queued_once(store: ArtifactStore):
    refs = [store.put("same", pin="run", defer=True) for _ in range(5)] + [store.put("same", pin="other", defer=True)]
    assert store.pending_writes == 2  # once per run that pins it
    store.unpin("run")
    assert _twin(store).get_bytes(refs[0]) == b"same" and store.pending_writes == 0
    store.unpin("other")


def test_closing_a_store_stores_what_it_deferred(store: ArtifactStore):
    other = _twin(store)
    ref = store.put("closing", defer=True)
    store.close()
    assert other.get_bytes(ref) == b"closing"


def test_a_batch_of_small_deferred_puts_makes_one_file_and_each_artifact_lives_on_its_own(tmp_path: Path):
    """The directory store writes a batch of small deferred puts as one pack linked in under each id:
    another store object reads each, and a TTL change or a delete touches one artifact only."""
    store, other = LocalArtifactStore(tmp_path / "a"), LocalArtifactStore(tmp_path / "a")
    refs = [store.put(f"packed {i}", pin="run", defer=True) for i in range(12)]
    again = store.put("packed 3", ttl=60, defer=True)  # the same bytes twice in one batch
    store.unpin("run")
    files = {os.stat(other._refname(r.id)).st_ino for r in refs}
    assert len(files) == 1, "one file made for the whole batch"
    assert [other.load(r) for r in refs] == [f"packed {i}" for i in range(12)]
    assert again.id == refs[3].id and other.expires_at(refs[3]) is None  # kept pinned-forever, as first written
    other.expire(refs[0], 60)
    assert other.expires_at(refs[0]) is not None and other.expires_at(refs[1]) is None
    assert other.delete(refs[1]) and not other.exists(refs[1])
    assert other.load(refs[2]) == "packed 2" and other.verify(refs[2]) and sorted(other.ids()) == sorted(
        r.id for i, r in enumerate(refs) if i != 1)
    assert not os.listdir(tmp_path / "a" / "tmp")


def test_a_pack_never_grows_past_pack_bytes(tmp_path: Path):
    store = LocalArtifactStore(tmp_path / "a", pack_bytes=2000)
    refs = [store.put(f"item {i}" * 10, pin="run", defer=True) for i in range(30)]
    store.unpin("run")
    sizes = {os.stat(store._refname(r.id)).st_ino: os.stat(store._refname(r.id)).st_size for r in refs}
    assert 1 < len(sizes) < 30 and max(sizes.values()) < 2000 + 1000  # a pack holds what fits, at least one
    store.cache.clear()
    assert [store.load(r) for r in refs] == [f"item {i}" * 10 for i in range(30)]


def test_a_damaged_pack_is_named_with_its_file_in_the_error(tmp_path: Path):
    store = LocalArtifactStore(tmp_path / "a")
    refs = [store.put(f"packed {i}", pin="run", defer=True) for i in range(3)]
    store.unpin("run")
    name = store._refname(refs[0].id)
    raw = Path(name).read_bytes()
    Path(name).unlink()
    Path(name).write_bytes(raw[:40])  # the start of a pack, cut inside its index, under one of its names
    with pytest.raises(StoreUnavailable, match=r"a pack of small artifacts") as err:
        LocalArtifactStore(tmp_path / "a").load(refs[0])
    assert str(name) in str(err.value) and refs[0].id in str(err.value)
