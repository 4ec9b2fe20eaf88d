"""A :class:`~opticmem.store.Store` in Redis: many processes, many sessions, one server.

Plain Redis 6.2+/7 is enough (no modules). ``redis`` is an optional dependency
(``pip install 'opticmem[redis]'``); importing :mod:`opticmem` never imports it, and
importing this module without it raises an :class:`ImportError` that says so.

>>> store = RedisStore.from_url("redis://localhost:6379/0", tenant="acme")  # doctest: +SKIP
>>> store.append_turn("alice", "user", "hi", 0.0).seq  # doctest: +SKIP
0

Key layout
----------
Every key of a session shares one hash tag, so Redis Cluster keeps a session in one slot
and the multi-key Lua scripts below never fail with ``CROSSSLOT``::

    opticmem:{T:S}:meta     hash    id (the session id as given), forgot (turns below it
                                    are forgotten), border/bbytes (blob order and bytes),
                                    swept (last TTL sweep of the blob keys, ms)
    opticmem:{T:S}:turns    list    one JSON record per turn; list index == seq;
                                    "" marks a forgotten turn
    opticmem:{T:S}:pages    list    one JSON page record per page; index == page_no
    opticmem:{T:S}:blobs    zset    blob key -> put order (index for caps, TTL, delete)
    opticmem:{T:S}:writers  hash    writer slot -> last call (makes retried appends
                                    idempotent; see "Faults" below)
    opticmem:{T:S}:b:K      string  one derived artefact: a 7-byte header (magic, flags,
                                    CRC-32) and the bytes, zlib-compressed when it pays

``T`` and ``S`` are the tenant and the session id, each UTF-8 encoded and
percent-escaped so that only ``A-Z a-z 0-9 - _ .`` and ``%XX`` remain (``{``, ``}``,
``:``, ``*``, spaces, everything else is escaped; ``~`` too). An escaped form longer
than :data:`MAX_DIRECT_ID_CHARS` is replaced by ``~`` and the SHA-256 of the id in hex.
The encoding is injective (the direct form never contains ``~``, ``:`` or ``}``), so no
id can reach another session's or tenant's keys, and ordinary ids stay readable for an
operator (``opticmem:{default:user-42}:turns``). Session ids are opaque: the memory layer
(:mod:`opticmem.sessions`) limits them to 256 characters; this store accepts any ``str``
of valid Unicode up to :data:`MAX_ID_BYTES` of UTF-8, and stores the id itself in the
meta hash so that :meth:`RedisStore.sessions` can return digest-keyed ids too.

Design
------
* **Turns in a list, index == seq.** One Lua script reads ``LLEN``, builds each record
  as ``{"seq":N,`` + the client's JSON, and ``RPUSH``-es the batch: the seq and the
  position are assigned in one atomic step, so concurrent writers get a total order with
  no gaps, and a whole-session read is a single ``LRANGE`` with no script and no second
  key (the physical floor of a Redis read). A list beats a stream here (stream entries
  carry IDs and field names and parse into nested tuples, which costs on every read)
  and a hash (``HMGET`` of 10k field names per read; no cheap "last N").
  Forgetting replaces a prefix by empty tombstones (``LTRIM`` + ``LPUSH``), which keeps
  index == seq (2 bytes per forgotten turn) and frees the text.
* **Pages in a list, index == page_no**; ``add_page`` is a script that compares
  ``page_no`` with ``LLEN`` and pushes only on equality (exactly-once, gaps refused).
* **Blobs in their own string keys**, never in the hot turn list, read with one
  ``GET``/``MGET``. The index zset lets a script delete, expire or evict them atomically
  (the scripts address blob keys built from the index; they share the session's hash
  tag, so they are in the same cluster slot).
* **Caps**: ``max_turns`` refuses an append that would hold more live (not forgotten)
  turns with :class:`SessionFullError` (nothing stored, never silent loss);
  ``max_blob_bytes`` evicts the oldest *derived* blobs (recomputable) after a put.
* **Sliding TTL** (off by default): every write refreshes the session's fixed keys to
  ``ttl``; blob keys get ``ttl`` when put and are swept (refreshed) by the first write
  after ``ttl/4``, so a blob may expire up to ``ttl/4`` before its session (a cache
  eviction the store contract allows) but never outlives it.
* Records are JSON (:class:`~opticmem.records.Turn` / :class:`~opticmem.records.PageRecord`
  forms), blobs raw bytes; nothing is pickled. ``sessions()`` uses ``SCAN``, never ``KEYS``.

Faults and durability
---------------------
* Unreachable at start: :meth:`RedisStore.from_url` pings once without retries and
  raises :class:`~opticmem.errors.StoreUnavailableError` naming the URL (password
  hidden). Later connection loss is retried with exponential backoff (redis-py
  ``Retry``, about 8 s by default, configurable); when the retries run out the same
  error is raised.
* A retried append cannot duplicate a turn: each call carries a writer slot and a call
  number, and the script returns the original result when it sees the same call again
  (redis-py retries a command whose reply was lost, e.g. when the server died after
  executing it). Slots are per process (reset after ``fork``) and held for one call.
* "Durable on return" means: the server replied. A turn survives a server crash or
  restart only as far as the server's persistence allows: with ``appendonly yes`` and
  ``appendfsync always`` every acknowledged turn survives; ``everysec`` (Redis' default
  with AOF) may lose the last second; no AOF loses everything since the last snapshot.
  Use ``maxmemory-policy noeviction``: an eviction policy may drop archived turns.
  :meth:`RedisStore.from_url` logs a warning when it sees either risk.
* A record or blob that fails validation raises
  :class:`~opticmem.errors.CorruptRecordError` naming the Redis key (and seq or page);
  other turns, pages and blobs of the session stay readable.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import re
import struct
import threading
import weakref
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any, cast
from urllib.parse import quote, unquote_to_bytes, urlsplit, urlunsplit

try:
    import redis
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
    from redis.exceptions import NoScriptError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "opticmem's Redis store needs the 'redis' package (redis-py 5 or newer): "
        "pip install 'opticmem[redis]'"
    ) from exc

from opticmem.errors import (
    CorruptRecordError,
    InvalidSessionError,
    InvalidTurnError,
    PageConflictError,
    StoreError,
    StoreUnavailableError,
)
from opticmem.records import PageRecord, Turn
from opticmem.store import Store

log = logging.getLogger(__name__)

MAX_ID_BYTES = 65_536
"""Longest session id (and tenant) this store accepts, in UTF-8 bytes.

The memory layer's own limit is tighter (256 characters, :mod:`opticmem.sessions`);
this one only keeps a direct caller from sending megabyte ids to the server.
"""

MAX_DIRECT_ID_CHARS = 128
"""Escaped ids longer than this are keyed by ``~`` + SHA-256 (the id itself is in meta)."""

DEFAULT_RETRIES = 12
"""Connection retries before a call gives up (with the default backoff, about 8 s)."""

WRITER_SLOT_TTL_MS = 300_000
"""A writer slot's last-call record may be dropped this long after its call (when a
session has seen more than 64 slots): a retry must arrive within it to be deduplicated."""

_BLOB_MAGIC = b"om"
_BLOB_RAW = 0
_BLOB_ZLIB = 1
_BLOB_HEADER = struct.Struct(">2sBI")  # magic, flags, CRC-32 of the payload
_COMPRESSED_MAGICS = (
    b"\x89PNG", b"\xff\xd8\xff", b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"PK\x03\x04", b"RIFF",
    b"GIF8", b"BZh",
)
_COMPRESS_MIN = 1024
_SAMPLE = 65_536

_DIRECT_RE = re.compile(r"[A-Za-z0-9_.\-]*(?:%[0-9A-F]{2}[A-Za-z0-9_.\-]*)*")
_DIGEST_RE = re.compile(r"~[0-9a-f]{64}")

# --------------------------------------------------------------------------- Lua
# KEYS (every script): 1 meta, 2 turns, 3 pages, 4 blobs index, 5 writers.
# ARGV[1] = TTL in ms (0: none), ARGV[2] = blob key prefix ("opticmem:{T:S}:b:").
_LUA_COMMON = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Sliding TTL: refresh the session's fixed keys; sweep the blob keys every ttl/4.
local function touch(ttl, bprefix)
  if ttl <= 0 then return end
  for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ttl) end
  local now = now_ms()
  local swept = tonumber(redis.call('HGET', KEYS[1], 'swept') or '0')
  if now - swept >= ttl / 4 then
    local total = 0
    for _, k in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
      local bk = bprefix .. k
      if redis.call('PEXPIRE', bk, ttl) == 1 then
        total = total + redis.call('STRLEN', bk)
      else
        redis.call('ZREM', KEYS[4], k)
      end
    end
    redis.call('HSET', KEYS[1], 'swept', now, 'bbytes', total)
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('PEXPIRE', KEYS[4], ttl)
  end
end
"""

# ARGV: 3 max live turns (0: none), 4 session id, 5 writer slot, 6 call number,
# 7 how long a slot's record must be kept (ms), 8.. record tails (a JSON object without
# its opening brace).
# Returns {0, first_seq} appended; {1, first_seq} a repeat of a call already applied;
# {-1, live_turns} refused by the cap.
_LUA_APPEND = _LUA_COMMON + r"""
local ttl = tonumber(ARGV[1])
local maxn = tonumber(ARGV[3])
local slot, call = ARGV[5], ARGV[6]
local prev = redis.call('HGET', KEYS[5], slot)
if prev then
  local pcall_, pfirst = string.match(prev, '^(%d+):(%d+):')
  if pcall_ == call then return {1, tonumber(pfirst)} end
end
local n = #ARGV - 7
local len = redis.call('LLEN', KEYS[2])
if maxn > 0 then
  local forgot = tonumber(redis.call('HGET', KEYS[1], 'forgot') or '0')
  if len - forgot + n > maxn then return {-1, len - forgot} end
end
if len == 0 then redis.call('HSET', KEYS[1], 'id', ARGV[4]) end
local recs = {}
for i = 1, n do
  recs[#recs + 1] = '{"seq":' .. string.format('%d', len + i - 1) .. ',' .. ARGV[7 + i]
  if #recs == 1000 then
    redis.call('RPUSH', KEYS[2], unpack(recs))
    recs = {}
  end
end
if #recs > 0 then redis.call('RPUSH', KEYS[2], unpack(recs)) end
local now = now_ms()
redis.call('HSET', KEYS[5], slot, call .. ':' .. string.format('%d', len) .. ':' ..
           string.format('%d', now))
if redis.call('HLEN', KEYS[5]) > 64 then
  local all = redis.call('HGETALL', KEYS[5])
  for i = 1, #all, 2 do
    local t = tonumber(string.match(all[i + 1], ':(%d+)$'))
    if t and now - t > tonumber(ARGV[7]) then
      redis.call('HDEL', KEYS[5], all[i])
    end
  end
end
touch(ttl, ARGV[2])
return {0, len}
"""

# ARGV: 3 page_no, 4 page JSON. Returns {1, count} stored; {0, count} exists; {-1, count} gap.
_LUA_ADD_PAGE = _LUA_COMMON + r"""
local n = redis.call('LLEN', KEYS[3])
local p = tonumber(ARGV[3])
if p < n then return {0, n} end
if p > n then return {-1, n} end
redis.call('RPUSH', KEYS[3], ARGV[4])
touch(tonumber(ARGV[1]), ARGV[2])
return {1, n + 1}
"""

# ARGV: 3 max blob bytes (0: none), 4 encoded blob key, 5 stored bytes.
# Returns the number of older blobs evicted by the cap.
_LUA_PUT_BLOB = _LUA_COMMON + r"""
local ttl = tonumber(ARGV[1])
local maxb = tonumber(ARGV[3])
local bk = ARGV[2] .. ARGV[4]
local old = redis.call('STRLEN', bk)
if ttl > 0 then
  redis.call('SET', bk, ARGV[5], 'PX', ttl)
else
  redis.call('SET', bk, ARGV[5])
end
local order = redis.call('HINCRBY', KEYS[1], 'border', 1)
redis.call('ZADD', KEYS[4], order, ARGV[4])
local total = redis.call('HINCRBY', KEYS[1], 'bbytes', string.len(ARGV[5]) - old)
local evicted = 0
if maxb > 0 and total > maxb then
  -- recount exactly (blob keys may have expired on their own), then drop the oldest
  total = 0
  for _, k in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    total = total + redis.call('STRLEN', ARGV[2] .. k)
  end
  while total > maxb do
    local oldest = redis.call('ZRANGE', KEYS[4], 0, 0)[1]
    if oldest == nil or oldest == ARGV[4] then break end
    local vk = ARGV[2] .. oldest
    total = total - redis.call('STRLEN', vk)
    redis.call('UNLINK', vk)
    redis.call('ZREM', KEYS[4], oldest)
    evicted = evicted + 1
  end
  redis.call('HSET', KEYS[1], 'bbytes', total)
end
touch(ttl, ARGV[2])
return evicted
"""

# ARGV: 3 before_seq. Returns the number of turns forgotten.
_LUA_FORGET = _LUA_COMMON + r"""
local len = redis.call('LLEN', KEYS[2])
local forgot = tonumber(redis.call('HGET', KEYS[1], 'forgot') or '0')
local stop = math.min(math.max(tonumber(ARGV[3]), 0), len)
if stop <= forgot then return 0 end
redis.call('LTRIM', KEYS[2], stop, -1)
local tomb = {}
for i = 1, stop do
  tomb[#tomb + 1] = ''
  if #tomb == 1000 then
    redis.call('LPUSH', KEYS[2], unpack(tomb))
    tomb = {}
  end
end
if #tomb > 0 then redis.call('LPUSH', KEYS[2], unpack(tomb)) end
redis.call('HSET', KEYS[1], 'forgot', stop)
touch(tonumber(ARGV[1]), ARGV[2])
return stop - forgot
"""

# ARGV: 2 blob key prefix. Deletes every key of the session.
_LUA_DELETE = r"""
for _, k in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  redis.call('UNLINK', ARGV[2] .. k)
end
return redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
"""


@dataclass(frozen=True)
class _Lua:
    name: str
    source: str
    sha: str


def _lua(name: str, source: str) -> _Lua:
    return _Lua(name, source, hashlib.sha1(source.encode()).hexdigest())


APPEND = _lua("append", _LUA_APPEND)
ADD_PAGE = _lua("add_page", _LUA_ADD_PAGE)
PUT_BLOB = _lua("put_blob", _LUA_PUT_BLOB)
FORGET = _lua("forget", _LUA_FORGET)
DELETE = _lua("delete", _LUA_DELETE)


class SessionFullError(StoreError):
    """An append would take a session past the store's ``max_turns``; nothing was stored.

    Forget old turns (:meth:`~opticmem.store.Store.forget_turns`) or delete the session
    to make room, or open the store with a larger cap.
    """


# --------------------------------------------------------------------------- ids and keys
def _id_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidSessionError(f"{what} must be a str, got {type(value).__name__}")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidSessionError(
            f"{what} is not valid Unicode (lone surrogate at index {exc.start})"
        ) from None
    if len(raw) > MAX_ID_BYTES:
        raise InvalidSessionError(
            f"{what} is {len(raw):,} bytes of UTF-8; the Redis store's limit is {MAX_ID_BYTES:,}"
        )
    return raw


def encode_id(value: str, what: str = "session id") -> str:
    """The key-safe form of a tenant, session id or blob key (see the module docstring).

    >>> encode_id("user-42"), encode_id("a:b}*"), encode_id("x" * 200)[:9]
    ('user-42', 'a%3Ab%7D%2A', '~aa20c23e')
    """
    raw = _id_bytes(value, what)
    out = quote(raw, safe="").replace("~", "%7E")
    if len(out) > MAX_DIRECT_ID_CHARS:
        return "~" + hashlib.sha256(raw).hexdigest()
    return out


def decode_direct_id(encoded: str) -> str | None:
    """The id a direct (non-digest) encoded form stands for, or ``None`` if ``encoded`` is
    not exactly what :func:`encode_id` would write (a foreign or damaged key)."""
    if not _DIRECT_RE.fullmatch(encoded):
        return None
    try:
        value = unquote_to_bytes(encoded).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return value if encode_id(value) == encoded else None


@dataclass(frozen=True, slots=True)
class _Keys:
    """The Redis keys of one session (see the module docstring)."""

    session: str
    meta: str
    turns: str
    pages: str
    blobs: str
    writers: str
    blob_prefix: str

    @property
    def fixed(self) -> tuple[str, str, str, str, str]:
        return (self.meta, self.turns, self.pages, self.blobs, self.writers)


@lru_cache(maxsize=16_384)
def _session_keys(tenant_enc: str, session: str) -> _Keys:
    base = f"opticmem:{{{tenant_enc}:{encode_id(session)}}}:"
    return _Keys(session, base + "meta", base + "turns", base + "pages", base + "blobs",
                 base + "writers", base + "b:")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log and to put in errors).

    >>> redact_url("redis://user:s3cret@db.example:6380/2")
    'redis://user:***@db.example:6380/2'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable Redis URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _describe_client(client: Any) -> str:
    try:
        kw = client.connection_pool.connection_kwargs
    except AttributeError:
        return repr(client)
    if "path" in kw:
        return f"unix://{kw['path']}?db={kw.get('db', 0)}"
    return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def _decodes_responses(client: Any) -> bool:
    try:
        return bool(client.connection_pool.connection_kwargs.get("decode_responses", False))
    except AttributeError:
        return False


# --------------------------------------------------------------------------- blobs
def _should_compress(data: bytes) -> bool:
    if len(data) < _COMPRESS_MIN or data.startswith(_COMPRESSED_MAGICS):
        return False
    sample = data[:_SAMPLE]
    return len(zlib.compress(sample, 1)) <= 0.9 * len(sample)


def pack_blob(data: bytes, *, compress: bool = True) -> bytes:
    """The stored form of a blob: header (magic, flags, CRC-32 of ``data``) + payload."""
    data = bytes(data)
    crc = zlib.crc32(data)
    if compress and _should_compress(data):
        packed = zlib.compress(data, 1)
        if len(packed) <= 0.9 * len(data):
            return _BLOB_HEADER.pack(_BLOB_MAGIC, _BLOB_ZLIB, crc) + packed
    return _BLOB_HEADER.pack(_BLOB_MAGIC, _BLOB_RAW, crc) + data


def unpack_blob(stored: bytes, where: str) -> bytes:
    """The blob's bytes, or :class:`CorruptRecordError` naming ``where`` if damaged."""
    if len(stored) < _BLOB_HEADER.size:
        raise CorruptRecordError(f"{where}: blob is {len(stored)} bytes, shorter than its header")
    magic, flags, crc = _BLOB_HEADER.unpack_from(stored)
    if magic != _BLOB_MAGIC or flags not in (_BLOB_RAW, _BLOB_ZLIB):
        raise CorruptRecordError(f"{where}: not an opticmem blob (bad header {stored[:3]!r})")
    payload = stored[_BLOB_HEADER.size :]
    if flags == _BLOB_ZLIB:
        try:
            payload = zlib.decompress(payload)
        except zlib.error as exc:
            raise CorruptRecordError(f"{where}: compressed blob is damaged: {exc}") from None
    if zlib.crc32(payload) != crc:
        raise CorruptRecordError(f"{where}: blob fails its CRC-32 check")
    return payload


def _unpack_all(keys: Sequence[str], stored: Sequence[bytes | None]) -> list[bytes | None]:
    return [None if s is None else unpack_blob(s, k) for k, s in zip(keys, stored, strict=True)]


# --------------------------------------------------------------------------- records
def _turn_tail(role: str, text: str, ts: float, meta: Mapping[str, Any] | None) -> bytes:
    """A turn record without ``{"seq":N,`` (the append script prepends it)."""
    d: dict[str, Any] = {"role": role, "text": text, "ts": ts}
    if meta:
        d["meta"] = dict(meta)
    try:
        encoded = json.dumps(d, ensure_ascii=False, separators=(",", ":"))
        return encoded[1:].encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidTurnError(
            f"turn holds a lone surrogate at index {exc.start}; the archive holds valid Unicode"
        ) from None
    except (TypeError, ValueError) as exc:
        raise InvalidTurnError(f"turn cannot be stored as JSON: {exc}") from None


def _turn_from(session: str, seq: int, d: Any, key: str) -> Turn:
    if not isinstance(d, dict):
        raise CorruptRecordError(f"{key} turn {seq}: record is not a JSON object")
    role: Any = d.get("role")
    text: Any = d.get("text")
    ts: Any = d.get("ts")
    meta: Any = d.get("meta")
    if (
        d.get("seq") != seq
        or type(role) is not str
        or type(text) is not str
        or type(ts) not in (float, int)
        or not (meta is None or type(meta) is dict)
    ):
        raise CorruptRecordError(
            f"{key} turn {seq}: record fields are missing, mistyped or out of place"
        )
    return Turn(session, seq, role, text, float(ts), meta if meta is not None else {})


def _parse_turns(session: str, key: str, first: int, raw: Sequence[bytes]) -> list[Turn]:
    """Turns from ``LRANGE`` output starting at seq ``first``; tombstones are skipped.

    Parses the whole batch with one ``json.loads`` (much cheaper than one call per
    record) and falls back to record by record to name the first damaged one.
    """
    seqs = [first + i for i, r in enumerate(raw) if r]
    live = [r for r in raw if r]
    if not live:
        return []
    docs: list[Any] | None
    try:
        docs = json.loads(b"[" + b",".join(live) + b"]")
        if not isinstance(docs, list) or len(docs) != len(live):
            docs = None
    except (ValueError, UnicodeDecodeError):
        docs = None
    if docs is not None:
        try:
            return [_turn_from(session, seq, d, key) for seq, d in zip(seqs, docs, strict=True)]
        except CorruptRecordError:
            pass  # a record that parsed into its neighbours: find it one by one
    out = []
    for seq, r in zip(seqs, live, strict=True):
        try:
            d = json.loads(r)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptRecordError(f"{key} turn {seq}: unreadable JSON: {exc}") from None
        out.append(_turn_from(session, seq, d, key))
    return out


def _parse_pages(session: str, key: str, first: int, raw: Sequence[bytes]) -> list[PageRecord]:
    out = []
    for i, r in enumerate(raw):
        n = first + i
        try:
            page = PageRecord.from_json(session, r)
        except CorruptRecordError as exc:
            raise CorruptRecordError(f"{key} page {n}: {exc}") from None
        if page.page_no != n:
            raise CorruptRecordError(f"{key} page {n}: record says page {page.page_no}")
        out.append(page)
    return out


def _range(start: int, stop: int) -> tuple[int, int] | None:
    """``LRANGE`` bounds for ``start <= index < stop``, or ``None`` if empty."""
    lo, hi = max(start, 0), min(stop, 2**62) - 1
    return (lo, hi) if hi >= lo else None


# --------------------------------------------------------------------------- writer slots
class _WriterSlots:
    """Writer slots that make retried appends idempotent.

    A call takes a slot (a random id) and the slot's next call number for its whole
    duration, retries included; the append script records ``slot -> call number`` and
    treats a second delivery of the same pair as a repeat. Slots are reused LIFO, so a
    process touches few of them, and a forked child starts with fresh ones.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._free: list[tuple[str, itertools.count[int]]] = []

    def acquire(self) -> tuple[str, itertools.count[int], int]:
        with self._lock:
            if self._pid != os.getpid():
                self._pid, self._free = os.getpid(), []
            if self._free:
                slot, counter = self._free.pop()
            else:
                slot, counter = os.urandom(12).hex(), itertools.count(1)
        return slot, counter, next(counter)

    def release(self, slot: str, counter: itertools.count[int]) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._free.append((slot, counter))


# --------------------------------------------------------------------------- the store
def _default_retry(retries: int) -> Retry:
    return Retry(ExponentialWithJitterBackoff(cap=2.0, base=0.05), retries)


def _default_async_retry(retries: int) -> AsyncRetry:
    return AsyncRetry(ExponentialWithJitterBackoff(cap=2.0, base=0.05), retries)


def _ms(ttl: float | timedelta | None) -> int:
    if ttl is None:
        return 0
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if not seconds > 0:
        raise ValueError(f"ttl must be positive seconds or None, got {ttl!r}")
    return max(1, round(seconds * 1000))


class RedisStore(Store):
    """A :class:`~opticmem.store.Store` in Redis (see the module docstring for the layout).

    Build it with :meth:`from_url`, or wrap clients you already have::

        RedisStore(client=redis.Redis(...), aclient=redis.asyncio.Redis(...), tenant="acme")

    Both clients must use ``decode_responses=False`` (blobs are bytes). Sync methods use
    ``client``; the ``a``-prefixed twins use ``aclient`` natively (with only ``client``,
    they run the sync method in a worker thread; with only ``aclient``, sync calls raise
    :class:`~opticmem.errors.StoreError`). Clients passed in are not closed by
    :meth:`close`.

    ``tenant`` namespaces every key, so tenants sharing a server never see each other's
    sessions. ``ttl`` (seconds or ``timedelta``; ``None`` = keep forever, the default)
    is a sliding expiry refreshed by every write of a session. ``max_turns`` caps the
    live turns per session (:class:`SessionFullError` beyond it); ``max_blob_bytes``
    caps a session's derived artefacts (oldest evicted first; the newest blob is always
    kept). ``compress_blobs`` zlib-compresses blobs that shrink by 10% or more.
    """

    def __init__(
        self,
        client: redis.Redis | None = None,
        aclient: aredis.Redis | None = None,
        *,
        tenant: str = "default",
        ttl: float | timedelta | None = None,
        max_turns: int | None = None,
        max_blob_bytes: int | None = None,
        compress_blobs: bool = True,
        url: str | None = None,
        _aclient_factory: Callable[[], aredis.Redis] | None = None,
    ) -> None:
        if client is None and aclient is None and _aclient_factory is None:
            raise ValueError("RedisStore needs a client, an aclient or both (or use from_url)")
        for c in (client, aclient):
            if c is not None and _decodes_responses(c):
                raise ValueError(
                    "RedisStore needs a client with decode_responses=False (blobs are bytes)"
                )
        if not isinstance(tenant, str) or not tenant:
            raise ValueError(f"tenant must be a non-empty str, got {tenant!r}")
        for name, cap in (("max_turns", max_turns), ("max_blob_bytes", max_blob_bytes)):
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
                raise ValueError(f"{name} must be a positive int or None, got {cap!r}")
        self.tenant = tenant
        self._tenant_enc = encode_id(tenant, "tenant")
        self.ttl_ms = _ms(ttl)
        self.max_turns = max_turns
        self.max_blob_bytes = max_blob_bytes
        self.compress_blobs = compress_blobs
        self.url = redact_url(url) if url else _describe_client(client or aclient)
        self._client = client
        self._aclient = aclient
        self._aclient_factory = _aclient_factory
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aredis.Redis] = (
            weakref.WeakKeyDictionary()
        )
        self._aclients_pid = os.getpid()
        self._owns_clients = url is not None
        self._slots = _WriterSlots()
        self._closed = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        tenant: str = "default",
        ttl: float | timedelta | None = None,
        max_turns: int | None = None,
        max_blob_bytes: int | None = None,
        compress_blobs: bool = True,
        retries: int = DEFAULT_RETRIES,
        socket_timeout: float | None = 10.0,
        socket_connect_timeout: float | None = 5.0,
        check: bool = True,
        **redis_kwargs: Any,
    ) -> RedisStore:
        """Open a store on the Redis server at ``url`` (``redis://``, ``rediss://``,
        ``unix://``), with a sync client now and an async client per event loop on first
        use. Extra keyword arguments go to ``redis.Redis.from_url``.

        With ``check`` (default) the server is pinged once, without retries, so a wrong
        URL fails here with :class:`~opticmem.errors.StoreUnavailableError`; the server's
        persistence and eviction settings are logged if they put turns at risk.
        Connection loss later is retried ``retries`` times with exponential backoff.
        """
        if not isinstance(url, str) or not url:
            raise ValueError(f"not a Redis URL: {url!r}")
        safe = redact_url(url)
        common: dict[str, Any] = dict(
            decode_responses=False,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            **redis_kwargs,
        )
        if check:
            _check_server(url, safe, common, ttl is not None)
        try:
            client = redis.Redis.from_url(url, retry=_default_retry(retries), **common)
        except ValueError as exc:
            raise StoreError(f"bad Redis URL {safe}: {exc}") from exc

        def make_aclient() -> aredis.Redis:
            return aredis.Redis.from_url(url, retry=_default_async_retry(retries), **common)

        return cls(
            client, None, tenant=tenant, ttl=ttl, max_turns=max_turns,
            max_blob_bytes=max_blob_bytes, compress_blobs=compress_blobs, url=url,
            _aclient_factory=make_aclient,
        )

    # ------------------------------------------------------------------ plumbing
    def _keys(self, session: str) -> _Keys:
        if type(session) is not str:
            raise InvalidSessionError(f"session id must be a str, got {type(session).__name__}")
        return _session_keys(self._tenant_enc, session)

    def _sync(self) -> redis.Redis:
        if self._closed:
            raise StoreError(f"Redis store at {self.url} is closed")
        if self._client is None:
            raise StoreError(
                "this RedisStore was given only an async client: use the a-prefixed methods"
            )
        return self._client

    def _async(self) -> aredis.Redis:
        if self._closed:
            raise StoreError(f"Redis store at {self.url} is closed")
        if self._aclient is not None:
            return self._aclient
        if self._aclient_factory is None:
            raise StoreError("this RedisStore has no async client")
        if self._aclients_pid != os.getpid():
            self._aclients, self._aclients_pid = weakref.WeakKeyDictionary(), os.getpid()
        loop = asyncio.get_running_loop()
        c = self._aclients.get(loop)
        if c is None:
            c = self._aclients[loop] = self._aclient_factory()
        return c

    @property
    def _native_async(self) -> bool:
        return self._aclient is not None or self._aclient_factory is not None

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn redis-py's exceptions into opticmem's typed ones."""
        try:
            yield
        except redis.exceptions.AuthenticationError as exc:
            raise StoreUnavailableError(
                f"Redis at {self.url} refused the credentials during {what}: {exc}"
            ) from exc
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StoreUnavailableError(
                f"Redis at {self.url} is unreachable ({what} failed after retries): {exc}"
            ) from exc
        except redis.exceptions.RedisError as exc:
            raise StoreError(f"Redis at {self.url} failed {what}: {exc}") from exc

    def _run(self, lua: _Lua, keys: _Keys, args: Sequence[Any]) -> Any:
        client = self._sync()
        full = (*keys.fixed, *args)
        try:
            return client.evalsha(lua.sha, 5, *full)
        except NoScriptError:
            client.script_load(lua.source)
            return client.evalsha(lua.sha, 5, *full)

    async def _arun(self, lua: _Lua, keys: _Keys, args: Sequence[Any]) -> Any:
        client = self._async()
        full = (*keys.fixed, *args)
        try:
            return await client.evalsha(lua.sha, 5, *full)
        except NoScriptError:
            await client.script_load(lua.source)
            return await client.evalsha(lua.sha, 5, *full)

    def _common(self, keys: _Keys) -> list[Any]:
        return [self.ttl_ms, keys.blob_prefix]

    # ------------------------------------------------------------------ turn log
    def _append_args(
        self, keys: _Keys, items: Sequence[tuple[str, str, float, Mapping[str, Any] | None]],
        slot: str, call: int,
    ) -> list[Any]:
        tails = [_turn_tail(r, t, float(ts), m) for r, t, ts, m in items]
        return [*self._common(keys), self.max_turns or 0, keys.session.encode("utf-8"),
                slot, call, WRITER_SLOT_TTL_MS, *tails]

    def _appended(
        self, keys: _Keys, items: Sequence[tuple[str, str, float, Mapping[str, Any] | None]],
        result: Any,
    ) -> list[Turn]:
        status, value = int(result[0]), int(result[1])
        if status < 0:
            raise SessionFullError(
                f"session {keys.session[:200]!r} holds {value} turns; max_turns is "
                f"{self.max_turns} and {len(items)} more were refused (nothing stored)"
            )
        if status == 1:
            log.info("append to %s was delivered twice (a retry); kept the first", keys.turns)
        return [
            Turn(keys.session, value + i, r, t, float(ts), dict(m or {}))
            for i, (r, t, ts, m) in enumerate(items)
        ]

    def append_turn(
        self, session: str, role: str, text: str, ts: float, meta: Mapping[str, Any] | None = None
    ) -> Turn:
        return self.append_turns(session, [(role, text, ts, meta)])[0]

    def append_turns(
        self, session: str, items: Sequence[tuple[str, str, float, Mapping[str, Any] | None]]
    ) -> list[Turn]:
        """Append the batch with contiguous seqs in one round trip (one Lua call)."""
        keys = self._keys(session)
        if not items:
            return []
        slot, counter, call = self._slots.acquire()
        try:
            args = self._append_args(keys, items, slot, call)
            with self._guard("append"):
                result = self._run(APPEND, keys, args)
        finally:
            self._slots.release(slot, counter)
        return self._appended(keys, items, result)

    def turn_count(self, session: str) -> int:
        keys = self._keys(session)
        with self._guard("turn_count"):
            return int(self._sync().llen(keys.turns))

    def get_turns(self, session: str, start: int, stop: int) -> list[Turn]:
        keys = self._keys(session)
        bounds = _range(start, stop)
        if bounds is None:
            return []
        with self._guard("get_turns"):
            raw = cast(list[bytes], self._sync().lrange(keys.turns, *bounds))
        return _parse_turns(session, keys.turns, bounds[0], raw)

    # ------------------------------------------------------------------ page log
    def _paged(self, page: PageRecord, result: Any) -> bool:
        status, count = int(result[0]), int(result[1])
        if status < 0:
            raise PageConflictError(
                f"session {page.session[:200]!r}: page {page.page_no} written but the log "
                f"holds {count} pages (pages must be added in order)"
            )
        return status == 1

    def add_page(self, page: PageRecord) -> bool:
        keys = self._keys(page.session)
        args = [*self._common(keys), page.page_no, page.to_json().encode("utf-8")]
        with self._guard("add_page"):
            result = self._run(ADD_PAGE, keys, args)
        return self._paged(page, result)

    def page_count(self, session: str) -> int:
        keys = self._keys(session)
        with self._guard("page_count"):
            return int(self._sync().llen(keys.pages))

    def get_pages(self, session: str, start: int, stop: int) -> list[PageRecord]:
        keys = self._keys(session)
        bounds = _range(start, stop)
        if bounds is None:
            return []
        with self._guard("get_pages"):
            raw = cast(list[bytes], self._sync().lrange(keys.pages, *bounds))
        return _parse_pages(session, keys.pages, bounds[0], raw)

    # ------------------------------------------------------------------ blob cache
    def _blob_args(self, keys: _Keys, key: str, data: bytes) -> list[Any]:
        if not isinstance(key, str):
            raise TypeError(f"blob key must be a str, got {type(key).__name__}")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"blob data must be bytes, got {type(data).__name__}")
        return [*self._common(keys), self.max_blob_bytes or 0, encode_id(key, "blob key"),
                pack_blob(bytes(data), compress=self.compress_blobs)]

    def _blob_key(self, keys: _Keys, key: str) -> str:
        return keys.blob_prefix + encode_id(key, "blob key")

    def put_blob(self, session: str, key: str, data: bytes) -> None:
        keys = self._keys(session)
        args = self._blob_args(keys, key, data)
        with self._guard("put_blob"):
            evicted = int(self._run(PUT_BLOB, keys, args))
        if evicted:
            log.debug("%s: max_blob_bytes evicted %d older blobs", keys.blobs, evicted)

    def get_blob(self, session: str, key: str) -> bytes | None:
        keys = self._keys(session)
        bk = self._blob_key(keys, key)
        with self._guard("get_blob"):
            stored = cast(bytes | None, self._sync().get(bk))
        return None if stored is None else unpack_blob(stored, bk)

    def get_blobs(self, session: str, keys_: Sequence[str]) -> list[bytes | None]:
        """Several blobs in one ``MGET`` (the keys share a slot, so this works on Cluster)."""
        keys = self._keys(session)
        bks = [self._blob_key(keys, k) for k in keys_]
        if not bks:
            return []
        with self._guard("get_blobs"):
            stored = cast(list[bytes | None], self._sync().mget(bks))
        return _unpack_all(bks, stored)

    # ------------------------------------------------------------------ sessions
    def _scan_pattern(self) -> str:
        return f"opticmem:{{{self._tenant_enc}:*}}:turns"

    def _meta_key(self, enc: str) -> str:
        return f"opticmem:{{{self._tenant_enc}:{enc}}}:meta"

    def _split_key(self, key: bytes | str) -> str | None:
        """The encoded session id inside one of our ``:turns`` keys, or ``None``."""
        k = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        head, tail = f"opticmem:{{{self._tenant_enc}:", "}:turns"
        if not (k.startswith(head) and k.endswith(tail)):
            return None
        return k[len(head) : len(k) - len(tail)]

    def _resolve_digest(self, enc: str, stored: bytes | None) -> str | None:
        if stored is None:
            log.warning("session key %s has no id in its meta hash; skipped", enc)
            return None
        try:
            session = stored.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if encode_id(session) != enc:
            log.warning("session key %s: its meta id does not hash to it; skipped", enc)
            return None
        return session

    def sessions(self) -> Iterator[str]:
        """Session ids of this tenant with at least one turn, found with ``SCAN``."""
        client = self._sync()
        seen: set[str] = set()
        digests: list[str] = []

        def flush() -> Iterator[str]:
            if not digests:
                return
            pipe = client.pipeline(transaction=False)
            for enc in digests:
                pipe.hget(self._meta_key(enc), "id")
            with self._guard("sessions"):
                ids = pipe.execute()
            for enc, stored in zip(digests, ids, strict=True):
                s = self._resolve_digest(enc, stored)
                if s is not None:
                    yield s
            digests.clear()

        with self._guard("sessions"):
            it = client.scan_iter(match=self._scan_pattern(), count=1000)
            while True:
                try:
                    key = next(it)
                except StopIteration:
                    break
                enc = self._split_key(key)
                if enc is None or enc in seen:
                    continue
                seen.add(enc)
                if _DIGEST_RE.fullmatch(enc):
                    digests.append(enc)
                    if len(digests) >= 500:
                        yield from flush()
                    continue
                session = decode_direct_id(enc)
                if session is None:
                    log.debug("skipped a key that opticmem did not write: %r", key)
                    continue
                yield session
            yield from flush()

    def delete_session(self, session: str) -> None:
        keys = self._keys(session)
        with self._guard("delete_session"):
            self._run(DELETE, keys, [0, keys.blob_prefix])

    def forget_turns(self, session: str, before_seq: int) -> int:
        keys = self._keys(session)
        with self._guard("forget_turns"):
            return int(self._run(FORGET, keys, [*self._common(keys), int(before_seq)]))

    def close(self) -> None:
        """Close the clients this store opened (clients passed in are left open)."""
        if self._closed:
            return
        self._closed = True
        if self._owns_clients and self._client is not None:
            self._client.close()
        self._aclients = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------------ async twins
    async def aappend_turn(
        self, session: str, role: str, text: str, ts: float, meta: Mapping[str, Any] | None = None
    ) -> Turn:
        return (await self.aappend_turns(session, [(role, text, ts, meta)]))[0]

    async def aappend_turns(
        self, session: str, items: Sequence[tuple[str, str, float, Mapping[str, Any] | None]]
    ) -> list[Turn]:
        if not self._native_async:
            return await super().aappend_turns(session, items)
        keys = self._keys(session)
        if not items:
            return []
        slot, counter, call = self._slots.acquire()
        try:
            args = self._append_args(keys, items, slot, call)
            with self._guard("append"):
                result = await self._arun(APPEND, keys, args)
        finally:
            self._slots.release(slot, counter)
        return self._appended(keys, items, result)

    async def aturn_count(self, session: str) -> int:
        if not self._native_async:
            return await super().aturn_count(session)
        keys = self._keys(session)
        with self._guard("turn_count"):
            return int(await self._async().llen(keys.turns))

    async def aget_turns(self, session: str, start: int, stop: int) -> list[Turn]:
        if not self._native_async:
            return await super().aget_turns(session, start, stop)
        keys = self._keys(session)
        bounds = _range(start, stop)
        if bounds is None:
            return []
        with self._guard("get_turns"):
            raw = cast(list[bytes], await self._async().lrange(keys.turns, *bounds))
        return _parse_turns(session, keys.turns, bounds[0], raw)

    async def aadd_page(self, page: PageRecord) -> bool:
        if not self._native_async:
            return await super().aadd_page(page)
        keys = self._keys(page.session)
        args = [*self._common(keys), page.page_no, page.to_json().encode("utf-8")]
        with self._guard("add_page"):
            result = await self._arun(ADD_PAGE, keys, args)
        return self._paged(page, result)

    async def apage_count(self, session: str) -> int:
        if not self._native_async:
            return await super().apage_count(session)
        keys = self._keys(session)
        with self._guard("page_count"):
            return int(await self._async().llen(keys.pages))

    async def aget_pages(self, session: str, start: int, stop: int) -> list[PageRecord]:
        if not self._native_async:
            return await super().aget_pages(session, start, stop)
        keys = self._keys(session)
        bounds = _range(start, stop)
        if bounds is None:
            return []
        with self._guard("get_pages"):
            raw = cast(list[bytes], await self._async().lrange(keys.pages, *bounds))
        return _parse_pages(session, keys.pages, bounds[0], raw)

    async def aput_blob(self, session: str, key: str, data: bytes) -> None:
        if not self._native_async:
            return await super().aput_blob(session, key, data)
        keys = self._keys(session)
        args = self._blob_args(keys, key, data)
        with self._guard("put_blob"):
            evicted = int(await self._arun(PUT_BLOB, keys, args))
        if evicted:
            log.debug("%s: max_blob_bytes evicted %d older blobs", keys.blobs, evicted)

    async def aget_blob(self, session: str, key: str) -> bytes | None:
        if not self._native_async:
            return await super().aget_blob(session, key)
        keys = self._keys(session)
        bk = self._blob_key(keys, key)
        with self._guard("get_blob"):
            stored = cast(bytes | None, await self._async().get(bk))
        return None if stored is None else unpack_blob(stored, bk)

    async def aget_blobs(self, session: str, keys_: Sequence[str]) -> list[bytes | None]:
        if not self._native_async:
            return await super().aget_blobs(session, keys_)
        keys = self._keys(session)
        bks = [self._blob_key(keys, k) for k in keys_]
        if not bks:
            return []
        with self._guard("get_blobs"):
            stored = cast(list[bytes | None], await self._async().mget(bks))
        return _unpack_all(bks, stored)

    async def _ascan(self) -> AsyncIterator[str]:
        client = self._async()
        seen: set[str] = set()
        with self._guard("sessions"):
            async for key in client.scan_iter(match=self._scan_pattern(), count=1000):
                enc = self._split_key(key)
                if enc is None or enc in seen:
                    continue
                seen.add(enc)
                if _DIGEST_RE.fullmatch(enc):
                    stored = cast(bytes | None, await client.hget(self._meta_key(enc), "id"))
                    s = self._resolve_digest(enc, stored)
                else:
                    s = decode_direct_id(enc)
                if s is not None:
                    yield s

    async def asessions(self) -> list[str]:
        if not self._native_async:
            return await super().asessions()
        return [s async for s in self._ascan()]

    async def adelete_session(self, session: str) -> None:
        if not self._native_async:
            return await super().adelete_session(session)
        keys = self._keys(session)
        with self._guard("delete_session"):
            await self._arun(DELETE, keys, [0, keys.blob_prefix])

    async def aforget_turns(self, session: str, before_seq: int) -> int:
        if not self._native_async:
            return await super().aforget_turns(session, before_seq)
        keys = self._keys(session)
        with self._guard("forget_turns"):
            return int(await self._arun(FORGET, keys, [*self._common(keys), int(before_seq)]))

    async def aclose(self) -> None:
        """Close the clients this store opened, the current event loop's async one too."""
        if self._closed:
            return
        if self._owns_clients:
            try:
                loop = asyncio.get_running_loop()
                c = self._aclients.get(loop)
                if c is not None:
                    await c.aclose()
            except RuntimeError:  # pragma: no cover - aclose is always awaited in a loop
                pass
        self.close()


def _check_server(url: str, safe: str, common: dict[str, Any], uses_ttl: bool) -> None:
    """Ping once without retries; log persistence or eviction settings that risk turns."""
    probe = None
    try:
        probe = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **common)
        probe.ping()
        info = probe.info()
    except ValueError as exc:
        raise StoreError(f"bad Redis URL {safe}: {exc}") from exc
    except redis.exceptions.AuthenticationError as exc:
        raise StoreUnavailableError(f"Redis at {safe} refused the credentials: {exc}") from exc
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise StoreUnavailableError(f"cannot reach Redis at {safe}: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise StoreUnavailableError(f"Redis at {safe} did not answer PING/INFO: {exc}") from exc
    finally:
        if probe is not None:
            probe.close()
    version = str(info.get("redis_version", "0"))
    if int(version.split(".")[0] or 0) < 7:
        log.warning("Redis at %s is version %s; opticmem is tested with Redis 7", safe, version)
    if not info.get("aof_enabled"):
        log.warning(
            "Redis at %s has AOF off: acknowledged turns survive a restart only as of the "
            "last RDB snapshot (use appendonly yes, appendfsync always or everysec)", safe
        )
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if policy.startswith("allkeys") or (uses_ttl and policy.startswith("volatile")):
        log.warning(
            "Redis at %s has maxmemory-policy %s: it may evict archived turns under memory "
            "pressure (use noeviction)", safe, policy
        )
