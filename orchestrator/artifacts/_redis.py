"""`RedisArtifactStore`: artifacts, records and event logs on real Redis.

Keys, under a configurable prefix ``p``::

    p art:<hex>                 JSON: {"ref": ArtifactRef, "chunks": n, "chunk": chunk size}
    p art:<hex>:data            the bytes, when they fit in one chunk
    p art:<hex>:<chunk>:<i>     else chunk i (of ``chunk`` bytes)
    p tmp:<token>:<i>           a writer's upload before it is published
    p pin:<run>                 set of the hex ids a run pins
    p pinned:<hex>              set of the runs pinning an artifact
    p rec:<ns>:<key>            a JSON record;  p recidx:<ns>  the namespace's key set
    p evs:<stream>              an event log (a Redis stream; entry id ``n-0`` is event n)

A writer uploads its chunks under its own random token, so it can start before
the content hash is known (hashing runs alongside, in a helper thread). A Lua
script then publishes atomically: if the id is new it RENAMEs the temporary keys
to the artifact's data keys (no copy), sets the ref, and gives every key the
same TTL; if another writer won, it drops the upload. Data keys only ever appear
complete, and a data key's name fixes its content (hash, chunk size, index), so
a reader never sees a partial or mixed blob. A small artifact is read in one
round trip (ref and data together). TTL changes and pins also run as scripts
over every key of an artifact, so its keys expire together. Event logs are
streams, so a follower blocks on ``XREAD`` until the next event instead of
polling. Redis errors become :class:`~orchestrator.errors.StoreUnavailable`.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis
from redis import exceptions as rexc

from orchestrator.errors import ArtifactError, ArtifactNotFound, ConfigError, StoreUnavailable

from ._ref import ArtifactRef, Modality, normalize_id
from .store import ArtifactStore, DeferredWrite, PendingRef

__all__ = ["RedisArtifactStore"]

F = TypeVar("F", bound=Callable[..., Any])
PROVISIONAL_TTL_MS = 3_600_000  # chunks of a writer that dies before publishing expire
PIPELINE_BYTES = 16 << 20  # chunks sent per round trip: bounds what a pipeline holds
EVENT_BLOCK_MAX_MS = 20_000  # a blocking event read returns before the socket timeout (30 s)
PUT_SMALL_BATCH = 256  # deferred small puts one script stores: bounds how long it holds the server

# Lua helpers shared by the scripts: the keys of an artifact, and setting their TTL together.
_LUA_LIB = """
local function data_keys(ref, chunks, chunk)
  if chunks == 1 then return {ref .. ':data'} end
  local keys = {}
  for i = 0, chunks - 1 do keys[#keys + 1] = ref .. ':' .. chunk .. ':' .. i end
  return keys
end
local function keys_of(ref)
  local raw = redis.call('GET', ref)
  if not raw then return nil, nil end
  local doc = cjson.decode(raw)
  local keys = data_keys(ref, doc.chunks, doc.chunk)
  table.insert(keys, 1, ref)
  return keys, raw
end
-- ttl: milliseconds, or '' for none; extend_only: never shorten a life or end 'forever'
local function set_ttl(keys, ttl, extend_only)
  if extend_only then
    local cur = redis.call('PTTL', keys[1])
    if cur == -1 or (ttl ~= '' and cur >= tonumber(ttl)) then return end
  end
  for i = 1, #keys do
    if ttl == '' then redis.call('PERSIST', keys[i]) else redis.call('PEXPIRE', keys[i], ttl) end
  end
end
-- pin the artifact at ``ref`` (id ``hex``) to ``run``: in the run's pin set and the run in its pinned-by set,
-- no TTL (an artifact's keys share one life, so a ref without a TTL has none to remove anywhere)
local function pin_to(ref, hex, pinset, by, run)
  redis.call('SADD', pinset, hex)
  redis.call('SADD', by, run)
  if redis.call('PERSIST', ref) == 1 then set_ttl(keys_of(ref), '', false) end
end
"""

# KEYS[1] ref key, KEYS[2..] this writer's temporary keys;
# ARGV[1] ref document, ARGV[2] TTL, ARGV[3] chunk size (the document's, passed to spare a decode).
# Returns nil when published, else the stored document (whose life is extended).
_PUBLISH = _LUA_LIB + """
local keys, raw = keys_of(KEYS[1])
if raw then
  for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
  set_ttl(keys, ARGV[2], true)
  return raw
end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    return redis.error_reply('ERR upload ' .. KEYS[i] .. ' vanished before it was published')
  end
end
local targets = data_keys(KEYS[1], #KEYS - 1, ARGV[3])
for i = 2, #KEYS do redis.call('RENAME', KEYS[i], targets[i - 1]) end
redis.call('SET', KEYS[1], ARGV[1])
table.insert(targets, 1, KEYS[1])
set_ttl(targets, ARGV[2], false)
return false
"""

# One-chunk artifacts whose ids are known, from their bytes (a batch of deferred puts), in order. KEYS[i] the ref
# key of the i-th (``p art:<hex>``); ARGV[1] the prefix ``p``, ARGV[2] a run whose pins the next script releases
# ('' = none) and ARGV[3] the TTL that release gives back ('' = none), then four per artifact: ref document, TTL,
# bytes, the run to pin it to ('' = none). A new one is written with its TTL (none when pinned); one stored already
# keeps its document, and its life is extended (or it is pinned). A new one pinned to the run being released is
# written as the release leaves it: with the TTL it gives back, none if another run pins it (no pin sets to fill
# and empty again). Returns the count of new ones.
_PUT_SMALL = _LUA_LIB + """
local prefix, releasing, released_ttl, new = ARGV[1], ARGV[2], ARGV[3], 0
for i = 1, #KEYS do
  local ref, doc, ttl, data, run = KEYS[i], ARGV[4 * i], ARGV[4 * i + 1], ARGV[4 * i + 2], ARGV[4 * i + 3]
  local hex
  if run ~= '' then
    hex = string.sub(ref, #prefix + 5)
    if run == releasing then
      ttl = released_ttl
      if ttl ~= '' and redis.call('EXISTS', prefix .. 'pinned:' .. hex) == 1 then ttl = '' end
    end
  end
  local set
  if ttl == '' then set = redis.call('SET', ref, doc, 'NX') else set = redis.call('SET', ref, doc, 'PX', ttl, 'NX') end
  if set then  -- first writer: the data key with the same life (the script is atomic: no reader sees it half done)
    if ttl == '' then redis.call('SET', ref .. ':data', data)
    else redis.call('SET', ref .. ':data', data, 'PX', ttl) end
    new = new + 1
  elseif run == '' then
    set_ttl(keys_of(ref), ttl, true)
  end
  if run ~= '' and not (set and run == releasing) then
    if set then  -- just written without a TTL: only the pin sets to fill
      redis.call('SADD', prefix .. 'pin:' .. run, hex)
      redis.call('SADD', prefix .. 'pinned:' .. hex, run)
    else
      pin_to(ref, hex, prefix .. 'pin:' .. run, prefix .. 'pinned:' .. hex, run)
    end
  end
end
return new
"""

# KEYS[1] ref key; ARGV[1] TTL ('' = none), ARGV[2] '1' to only extend. Returns 0 if absent.
_SET_TTL = _LUA_LIB + """
local keys = keys_of(KEYS[1])
if not keys then return 0 end
set_ttl(keys, ARGV[1], ARGV[2] == '1')
return 1
"""

# KEYS[1] ref key. Deletes the ref and its chunks together; returns 0 if absent.
_DELETE = _LUA_LIB + """
local keys = keys_of(KEYS[1])
if not keys then return 0 end
for i = 1, #keys do redis.call('DEL', keys[i]) end
return 1
"""

# KEYS[1] the run's pin set; ARGV[1] ref key prefix, ARGV[2] pinned-by prefix, ARGV[3] run id, ARGV[4..] hex ids.
_PIN = _LUA_LIB + """
for i = 4, #ARGV do
  local ref = ARGV[1] .. ARGV[i]
  if redis.call('EXISTS', ref) == 1 then pin_to(ref, ARGV[i], KEYS[1], ARGV[2] .. ARGV[i], ARGV[3]) end
end
return 1
"""

# KEYS[1] the run's pin set; ARGV[1] ref key prefix, ARGV[2] pinned-by prefix, ARGV[3] run id,
# ARGV[4] the default TTL ('' = keep). Artifacts no other run pins get the default TTL back.
_UNPIN = _LUA_LIB + """
local released = 0
for _, hex in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local by = ARGV[2] .. hex
  redis.call('SREM', by, ARGV[3])
  if redis.call('SCARD', by) == 0 then
    if ARGV[4] ~= '' then
      local keys = keys_of(ARGV[1] .. hex)
      if keys then set_ttl(keys, ARGV[4], false) end
    end
    released = released + 1
  end
end
redis.call('DEL', KEYS[1])
return released
"""

# KEYS[1] a record of artifact ids (or lists of ids), KEYS[2] the run's pin set; ARGV[1] ref key prefix,
# ARGV[2] pinned-by prefix, ARGV[3] run id ('' = pin nothing). Returns false without a record, else
# {record, id1, stored ref document of id1 or false, id2, ...}, pinning what it finds; 'bad' for a value
# that is not an id.
_RECORD_REFS = _LUA_LIB + """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local ok, rec = pcall(cjson.decode, raw)
if not ok or type(rec) ~= 'table' then return 'bad' end
local out = {raw}
for _, v in pairs(rec) do
  local ids = type(v) == 'table' and v or {v}
  for _, id in ipairs(ids) do
    if type(id) ~= 'string' or #id ~= 71 or not string.match(id, '^sha256:[0-9a-f]+$') then return 'bad' end
    local hex = string.sub(id, 8)
    local doc = redis.call('GET', ARGV[1] .. hex)
    out[#out + 1] = id
    out[#out + 1] = doc
    if doc and ARGV[3] ~= '' then pin_to(ARGV[1] .. hex, hex, KEYS[2], ARGV[2] .. hex, ARGV[3]) end
  end
end
return out
"""

# KEYS[1] the event stream; ARGV[1] the event (JSON). Event n gets the entry id n-0; returns n.
_APPEND = """
local n = redis.call('XLEN', KEYS[1])
for i = 1, #ARGV do
  n = n + 1
  redis.call('XADD', KEYS[1], n .. '-0', 'e', ARGV[i])
end
return n
"""


def _translated(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(self: RedisArtifactStore, *args: Any, **kwargs: Any) -> Any:
        self._settle()  # deferred puts are stored before anything else reaches the backend
        try:
            try:
                return fn(self, *args, **kwargs)
            except rexc.NoScriptError:  # the server restarted or its script cache was flushed
                self._load_scripts()
                return fn(self, *args, **kwargs)
        except (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError) as exc:
            raise StoreUnavailable(f"Redis at {self.url_for_humans} is unavailable: {exc}") from exc
        except rexc.RedisError as exc:
            raise StoreUnavailable(f"Redis error at {self.url_for_humans}: {exc}") from exc

    return wrapper  # type: ignore[return-value]


PACK_CUTOFF = 6000  # values over this many bytes (and memoryviews) are sent as they are, not copied into a command


class _ZeroCopyPacker:
    """Packs a command in one C call (hiredis) unless it carries a large value or a memoryview:
    those go through redis-py's pure-Python packer, which hands them to ``sendall`` as they are.
    A command of str, int and small bytes only (most, and the scripts a run's end sends, with a few
    arguments per artifact) goes to hiredis as it is, without redis-py's pass over its arguments."""

    def __init__(self, python: Any, hiredis: Any, pack_command: Callable[[tuple[Any, ...]], bytes]) -> None:
        self.python, self.hiredis, self.pack_command = python, hiredis, pack_command

    def pack(self, *args: Any) -> list[Any]:
        as_is = True
        for arg in args:
            kind = type(arg)
            if kind is str or kind is int:
                continue
            if isinstance(arg, memoryview) or (isinstance(arg, (bytes, bytearray)) and len(arg) > PACK_CUTOFF):
                return self.python.pack(*args)
            as_is = as_is and kind is bytes
        if as_is and type(args[0]) is str and " " not in args[0]:  # redis-py splits a name like 'CONFIG GET'
            return [self.pack_command(args)]
        return self.hiredis.pack(*args)


def _zero_copy_packer() -> dict[str, Any]:
    """Connection options that send large values straight from our buffers.

    With hiredis installed, redis-py packs every command into one new bytes
    object (and copies memoryviews first): two extra copies of each chunk. Its
    pure-Python packer hands large values and memoryviews to ``sendall`` as
    they are, but costs more per value, so commands of small values are still
    packed by hiredis (see :class:`_ZeroCopyPacker`). Replies are parsed by hiredis.
    """
    try:
        from redis.connection import Encoder, HiredisRespSerializer, PythonRespSerializer
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:  # a redis-py without them: keep the default
        return {}
    encoder = Encoder(encoding="utf-8", encoding_errors="strict", decode_responses=False)
    python = PythonRespSerializer(PACK_CUTOFF, encoder.encode)
    if not HIREDIS_AVAILABLE:
        return {"command_packer": python}
    import hiredis

    return {"command_packer": _ZeroCopyPacker(python, HiredisRespSerializer(), hiredis.pack_command)}


def _entries(items: list[tuple[bytes, dict[bytes, bytes]]]) -> list[tuple[int, dict[str, Any]]]:
    return [(int(entry_id.split(b"-")[0]), json.loads(fields[b"e"])) for entry_id, fields in items]


def _ms(ttl: float | None) -> str:
    return "" if ttl is None else str(max(1, int(ttl * 1000)))


class RedisArtifactStore(ArtifactStore):
    """Artifacts in Redis, split into chunks, under ``prefix``.

    >>> store = RedisArtifactStore("redis://127.0.0.1:6379/0", prefix="demo:")  # doctest: +SKIP
    >>> store.get_bytes(store.put("hi"))                                         # doctest: +SKIP
    b'hi'
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "orch:",
        chunk_bytes: int = 1 << 20,
        client: redis.Redis | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if chunk_bytes <= 0 or chunk_bytes > 512 << 20:
            raise ConfigError(f"chunk_bytes must be in (0, 512 MiB], got {chunk_bytes}")
        self.url = url
        self.prefix = prefix
        self.chunk_bytes = chunk_bytes
        try:
            self.r = client or redis.Redis.from_url(
                url, socket_connect_timeout=2, socket_timeout=30, health_check_interval=30, **_zero_copy_packer()
            )
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL {self.url_for_humans!r}: {exc}") from exc
        self._sha: dict[str, str] = {}

    @property
    def url_for_humans(self) -> str:
        return self.url.split("@")[-1]

    def __repr__(self) -> str:
        return f"RedisArtifactStore({self.url_for_humans!r}, prefix={self.prefix!r})"

    # -------------------------------------------------- keys and scripts
    def _k(self, artifact_id: str) -> str:
        return f"{self.prefix}art:{artifact_id[7:]}"

    def _data_keys(self, artifact_id: str, doc: dict[str, Any]) -> list[str]:
        base = self._k(artifact_id)
        if doc["chunks"] == 1:
            return [f"{base}:data"]
        return [f"{base}:{doc['chunk']}:{i}" for i in range(doc["chunks"])]

    def _doc(self, artifact_id: str) -> dict[str, Any] | None:
        raw = self.r.get(self._k(artifact_id))
        return json.loads(raw) if raw is not None else None

    def _load_scripts(self) -> None:
        # built whole, then swapped in: a thread that sees a non-empty map finds every script
        shas = {name: self.r.script_load(src)
                for name, src in (("publish", _PUBLISH), ("set_ttl", _SET_TTL), ("delete", _DELETE), ("pin", _PIN),
                                  ("unpin", _UNPIN), ("append", _APPEND),
                                  ("record_refs", _RECORD_REFS), ("put_small", _PUT_SMALL))}
        self._sha = shas

    def _script(self, name: str, keys: list[str], args: list[Any], client: Any = None) -> Any:
        if not self._sha:
            self._load_scripts()
        return (client or self.r).evalsha(self._sha[name], len(keys), *keys, *args)

    # -------------------------------------------------- artifacts
    def _write_pinned(self, pending: PendingRef, data: bytes, run_id: str) -> ArtifactRef:
        return self._write(pending, data, None, pin=run_id)

    @_translated
    def _write(self, pending: PendingRef, data: bytes, ttl: float | None, pin: str | None = None) -> ArtifactRef:
        """``pin``: also pin the artifact to that run, in the same round trip as the publish."""
        if not self._sha:
            self._load_scripts()
        n = max(1, -(-len(data) // self.chunk_bytes))
        tmp = [f"{self.prefix}tmp:{uuid.uuid4().hex[:12]}:{i}" for i in range(n)]
        # one chunk goes as the bytes object itself: redis-py writes a memoryview separately,
        # and a small command split over several TCP segments costs the server extra wake-ups
        view = memoryview(data) if n > 1 else None
        pipe = self.r.pipeline(transaction=False)
        queued, checked = 0, False
        try:
            # 1. upload under a private token, while the hash is computed alongside
            for i, key in enumerate(tmp):
                part = data if view is None else view[i * self.chunk_bytes : (i + 1) * self.chunk_bytes]
                pipe.set(key, part, px=PROVISIONAL_TTL_MS)
                queued += len(part)
                if queued >= PIPELINE_BYTES and i < n - 1:
                    pipe.execute()
                    queued = 0
                    if not checked and pending.done():  # a large blob stored already: stop uploading
                        checked = True
                        stored = self._stored(pending.result().id, ttl)
                        if stored is not None:
                            self._discard(tmp[: i + 1])
                            if pin is not None:
                                self._pin(pin, [stored.id])
                            return stored
            if not pending.done():
                pipe.execute()  # send the rest now; publish once the id is known
            # 2. publish: rename the upload into place, or drop it if another writer won
            ref = pending.result()
            pipe.execute_command(*self._publish_command(ref, tmp, ttl, pending.json()))
            if pin is not None:
                pipe.execute_command(*self._pin_command(pin, [ref.id]))
            replies = pipe.execute()
            existing = replies[-2] if pin is not None else replies[-1]
        except rexc.ResponseError:  # refused (OOM, a vanished upload): nothing was published
            self._discard(tmp)
            raise
        return ref if existing is None else ArtifactRef.model_validate(json.loads(existing)["ref"])

    def _publish_command(self, ref: ArtifactRef, tmp: list[str], ttl: float | None,
                         ref_json: str | None = None) -> tuple[Any, ...]:
        return ("EVALSHA", self._sha["publish"], 1 + len(tmp), self._k(ref.id), *tmp,
                self._refdoc(ref, len(tmp), ref_json), _ms(ttl), self.chunk_bytes)

    def _refdoc(self, ref: ArtifactRef, chunks: int, ref_json: str | None = None) -> str:
        """The ref document; ``ref_json``: the ref's JSON, when the put made it already."""
        return f'{{"ref":{ref_json or ref.model_dump_json()},"chunks":{chunks},"chunk":{self.chunk_bytes}}}'

    @_translated
    def _write_deferred(self, batch: list[DeferredWrite]) -> None:
        """One pipeline for the batch: a script per one-chunk artifact (stored and pinned together);
        larger ones are uploaded as any put is."""
        pipe = self.r.pipeline(transaction=False)
        larger = self._queue_deferred(pipe, batch)
        if len(pipe):
            pipe.execute()
        if larger:
            super()._write_deferred(larger)

    def _queue_deferred(self, pipe: Any, batch: list[DeferredWrite], releasing: str | None = None
                        ) -> list[DeferredWrite]:
        """Queue the one-chunk deferred puts on ``pipe``, one script per ``PUT_SMALL_BATCH`` of them;
        returns the larger ones. ``releasing``: a run whose pins a script queued next on ``pipe``
        releases (its new artifacts are written as the release leaves them)."""
        if not self._sha:
            self._load_scripts()
        small = [item for item in batch if len(item.data) <= self.chunk_bytes]
        for start in range(0, len(small), PUT_SMALL_BATCH):
            part = small[start : start + PUT_SMALL_BATCH]
            args: list[Any] = [self.prefix, releasing or "", _ms(self.default_ttl) if releasing else ""]
            for item in part:
                args += (self._refdoc(item.ref, 1, item.ref_json), _ms(item.ttl if item.pin is None else None),
                         item.data, item.pin or "")
            pipe.execute_command("EVALSHA", self._sha["put_small"], len(part), *(self._k(i.ref.id) for i in part),
                                 *args)
        return [item for item in batch if len(item.data) > self.chunk_bytes]

    def _stored(self, artifact_id: str, ttl: float | None) -> ArtifactRef | None:
        """The stored ref of an id (its life extended to ``ttl``), or ``None`` if absent."""
        if not self._script("set_ttl", [self._k(artifact_id)], [_ms(ttl), "1"]):
            return None
        doc = self._doc(artifact_id)
        return ArtifactRef.model_validate(doc["ref"]) if doc else None

    def _discard(self, keys: list[str]) -> None:
        """Best effort: drop the upload of a write that failed or was not needed."""
        try:
            self.r.delete(*keys)
        except rexc.RedisError:
            pass  # it expires with the provisional TTL anyway

    @_translated
    def _read(self, artifact_id: str) -> tuple[Modality, bytes]:
        base = self._k(artifact_id)
        for _ in range(3):  # deleted and stored again between two reads: look again
            pipe = self.r.pipeline(transaction=False)
            pipe.get(base)
            pipe.get(f"{base}:data")  # a one-chunk artifact comes in the same round trip
            raw, data = pipe.execute()
            if raw is None:
                break
            doc = json.loads(raw)
            modality = Modality(doc["ref"]["modality"])
            if doc["chunks"] == 1:
                if data is not None:
                    return modality, data
                continue
            pipe = self.r.pipeline(transaction=False)
            for key in self._data_keys(artifact_id, doc):
                pipe.get(key)
            parts = pipe.execute()
            if all(p is not None for p in parts):
                return modality, b"".join(parts)
        raise ArtifactNotFound("no such artifact (never stored, deleted or expired)", artifact_id=artifact_id)

    @_translated
    def _read_bytes(self, artifact_id: str) -> bytes:
        # a one-chunk artifact's data key exists only while its ref does (published, deleted
        # and expired together), so finding it is enough
        data = self.r.get(f"{self._k(artifact_id)}:data")
        return data if isinstance(data, bytes) else self._read(artifact_id)[1]

    @_translated
    def _read_range(self, artifact_id: str, start: int, end: int) -> bytes:
        doc = self._doc(artifact_id)
        if doc is None:
            raise ArtifactNotFound("no such artifact (never stored, deleted or expired)", artifact_id=artifact_id)
        size = int(doc["ref"]["size"])
        end = min(end, size - 1)
        if start > end:
            return b""
        keys = self._data_keys(artifact_id, doc)
        chunk = size if len(keys) == 1 else int(doc["chunk"])
        pipe = self.r.pipeline(transaction=False)
        for i in range(start // chunk, end // chunk + 1):  # GETRANGE on just the chunks that hold the span
            lo = start - i * chunk if i == start // chunk else 0
            hi = end - i * chunk if i == end // chunk else chunk - 1
            pipe.getrange(keys[i], lo, hi)
        data = b"".join(pipe.execute())
        if len(data) != end - start + 1:  # a missing key reads as empty: deleted or expired meanwhile
            raise ArtifactNotFound("artifact was deleted or expired while reading", artifact_id=artifact_id)
        return data

    @_translated
    def _read_ref(self, artifact_id: str) -> ArtifactRef | None:
        doc = self._doc(artifact_id)
        return ArtifactRef.model_validate(doc["ref"]) if doc else None

    @_translated
    def stat_many(self, refs: Iterable[ArtifactRef | str], *, pin: str | None = None) -> list[ArtifactRef | None]:
        ids = [normalize_id(r) for r in refs]
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for artifact_id in ids:
            pipe.get(self._k(artifact_id))
        if pin is not None:  # pins only what exists: one round trip for both
            pipe.execute_command(*self._pin_command(pin, ids))
        replies = pipe.execute()
        found = [ArtifactRef.model_validate(json.loads(raw)["ref"]) if raw is not None else None
                 for raw in replies[: len(ids)]]
        if pin is not None:
            self._note_pins(pin, [i for i, ref in zip(ids, found, strict=True) if ref is not None])
        return found

    @_translated
    def _exists(self, artifact_id: str) -> bool:
        return bool(self.r.exists(self._k(artifact_id)))

    @_translated
    def _delete(self, artifact_id: str) -> bool:
        return bool(self._script("delete", [self._k(artifact_id)], []))

    @_translated
    def _expire(self, artifact_id: str, ttl: float | None) -> bool:
        return bool(self._script("set_ttl", [self._k(artifact_id)], [_ms(ttl), "0"]))

    @_translated
    def _ids(self) -> list[str]:
        plen = len(self.prefix) + 4
        found = (key.decode()[plen:] for key in self.r.scan_iter(match=f"{self.prefix}art:*", count=1000))
        return ["sha256:" + name for name in found if ":" not in name]

    @_translated
    def ttl(self, ref: ArtifactRef | str) -> dict[str, int]:
        """Remaining TTL in seconds of every key of an artifact (-1: none), for inspection and tests."""
        artifact_id = normalize_id(ref)
        doc = self._doc(artifact_id)
        if doc is None:
            raise ArtifactNotFound("no such artifact", artifact_id=artifact_id)
        keys = [self._k(artifact_id), *self._data_keys(artifact_id, doc)]
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.ttl(key)
        return dict(zip(keys, pipe.execute(), strict=True))

    # -------------------------------------------------- pins (shared by every process on this Redis)
    @_translated
    def _pin(self, run_id: str, ids: list[str]) -> None:
        self.r.execute_command(*self._pin_command(run_id, ids))

    def _pin_command(self, run_id: str, ids: list[str]) -> tuple[Any, ...]:
        if not self._sha:
            self._load_scripts()
        keys = [f"{self.prefix}pin:{run_id}"]
        args = [f"{self.prefix}art:", f"{self.prefix}pinned:", run_id, *(i[7:] for i in ids)]
        return ("EVALSHA", self._sha["pin"], len(keys), *keys, *args)

    @_translated
    def _unpin(self, run_id: str, deferred: list[DeferredWrite]) -> None:
        """The deferred puts and the release in one pipeline (the release runs after them)."""
        pipe = self.r.pipeline(transaction=False)
        larger = self._queue_deferred(pipe, deferred, releasing=run_id)
        if larger:  # uploaded first: the release must come after every pin
            pipe.execute()
            super()._write_deferred(larger)
        args = [f"{self.prefix}art:", f"{self.prefix}pinned:", run_id, _ms(self.default_ttl)]
        pipe.execute_command("EVALSHA", self._sha["unpin"], 1, f"{self.prefix}pin:{run_id}", *args)
        pipe.execute()

    # -------------------------------------------------- records
    def _rec(self, namespace: str, key: str) -> str:
        return f"{self.prefix}rec:{namespace}:{key}"

    @_translated
    def put_record(self, namespace: str, key: str, value: dict[str, Any], *, ttl: float | None = None) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self._rec(namespace, key), json.dumps(value), px=int(_ms(ttl)) if ttl is not None else None)
        pipe.sadd(f"{self.prefix}recidx:{namespace}", key)
        pipe.execute()

    @_translated
    def get_record(self, namespace: str, key: str) -> dict[str, Any] | None:
        raw = self.r.get(self._rec(namespace, key))
        return json.loads(raw) if raw is not None else None

    @_translated
    def get_record_refs(self, namespace: str, key: str, *, pin: str | None = None
                        ) -> tuple[dict[str, Any], dict[str, ArtifactRef | None]] | None:
        """One script: the record, the ref document of each id it holds, and the pins."""
        reply = self._script("record_refs", *self._record_refs_args(namespace, key, pin))
        if reply == b"bad":
            raise ArtifactError("the record does not hold artifact ids")
        return self._record_refs_reply(reply, pin)

    @_translated
    def get_record_refs_many(self, namespace: str, keys: list[str], *, pin: str | None = None
                             ) -> list[tuple[dict[str, Any], dict[str, ArtifactRef | None]] | None]:
        """The scripts of :meth:`get_record_refs` for every key, in one pipeline."""
        if not keys:
            return []
        if not self._sha:
            self._load_scripts()
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            script_keys, args = self._record_refs_args(namespace, key, pin)
            pipe.evalsha(self._sha["record_refs"], len(script_keys), *script_keys, *args)
        return [None if reply == b"bad" else self._record_refs_reply(reply, pin) for reply in pipe.execute()]

    def _record_refs_args(self, namespace: str, key: str, pin: str | None) -> tuple[list[str], list[str]]:
        """KEYS and ARGV of the ``record_refs`` script."""
        return ([self._rec(namespace, key), f"{self.prefix}pin:{pin or ''}"],
                [f"{self.prefix}art:", f"{self.prefix}pinned:", pin or ""])

    def _record_refs_reply(self, reply: Any, pin: str | None
                           ) -> tuple[dict[str, Any], dict[str, ArtifactRef | None]] | None:
        """The record and its refs from a ``record_refs`` reply (not ``'bad'``), noting the pins."""
        if reply is None:
            return None
        refs = {item[0].decode(): ArtifactRef.model_validate(json.loads(item[1])["ref"]) if item[1] else None
                for item in zip(reply[1::2], reply[2::2], strict=True)}
        if pin is not None:
            self._note_pins(pin, [i for i, ref in refs.items() if ref is not None])
        record = json.loads(reply[0])
        return (record, refs) if record else None

    @_translated
    def delete_record(self, namespace: str, key: str) -> bool:
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self._rec(namespace, key))
        pipe.srem(f"{self.prefix}recidx:{namespace}", key)
        return bool(pipe.execute()[0])

    @_translated
    def list_records(self, namespace: str) -> list[str]:
        index = f"{self.prefix}recidx:{namespace}"
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in self.r.smembers(index))
        if not keys:
            return []
        pipe = self.r.pipeline(transaction=False)
        for k in keys:
            pipe.exists(self._rec(namespace, k))
        alive = pipe.execute()
        expired = [k for k, a in zip(keys, alive, strict=True) if not a]
        if expired:
            self.r.srem(index, *expired)
        return [k for k, a in zip(keys, alive, strict=True) if a]

    # -------------------------------------------------- events
    def _ev(self, stream: str) -> str:
        return f"{self.prefix}evs:{stream}"

    @_translated
    def append_event(self, stream: str, event: dict[str, Any]) -> int:
        return int(self._script("append", [self._ev(stream)], [json.dumps(event, separators=(",", ":"))]))

    @_translated
    def append_events(self, stream: str, events: list[dict[str, Any]]) -> list[int]:
        """One script (one command, one round trip) for the whole batch, appended in order."""
        if not events:
            return []
        last = int(self._script("append", [self._ev(stream)], [json.dumps(e, separators=(",", ":")) for e in events]))
        return list(range(last - len(events) + 1, last + 1))

    @_translated
    def read_events(self, stream: str, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
        return _entries(self.r.xrange(self._ev(stream), min=f"{after + 1}-0"))

    @_translated
    def wait_events(self, stream: str, after: int = 0, timeout: float = 5.0) -> list[tuple[int, dict[str, Any]]]:
        """Blocks on ``XREAD`` until an event after ``after`` is appended (by any process)."""
        block_ms = max(1, min(int(timeout * 1000), EVENT_BLOCK_MAX_MS))
        reply = self.r.xread({self._ev(stream): f"{after}-0"}, block=block_ms)
        return _entries(reply[0][1]) if reply else []

    @_translated
    def expire_events(self, stream: str, ttl: float | None) -> None:
        key = self._ev(stream)
        if ttl is None:
            self.r.persist(key)
        else:
            self.r.pexpire(key, max(1, int(ttl * 1000)))

    @_translated
    def ping(self) -> None:
        self.r.ping()

    def close(self) -> None:
        super().close()
        self.r.close()

    @_translated
    def clear_prefix(self) -> int:
        """Delete every key under this store's prefix (tests, resets). Returns the count."""
        n = 0
        batch = []
        for key in self.r.scan_iter(match=f"{self.prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                n += self.r.delete(*batch)
                batch.clear()
        if batch:
            n += self.r.delete(*batch)
        self.cache.clear()
        return n
