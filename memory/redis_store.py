"""A :class:`~opticmem.store.Store` in Redis: many processes, many sessions, one server
(or one Redis Cluster).

Plain Redis 7 is enough (no modules). ``redis`` (redis-py) is an optional dependency
(``pip install 'opticmem[redis]'``); importing :mod:`opticmem` never imports it, and
importing this module without it raises an :class:`ImportError` that says so.

>>> store = RedisStore.from_url("redis://localhost:6379/0", tenant="acme")  # doctest: +SKIP
>>> store.append_turn("alice", "user", "hi", 0.0).seq  # doctest: +SKIP
0

:meth:`RedisStore.from_store_url` takes the same settings in the URL's query string
(``redis://host:6379/0?tenant=acme&ttl=86400&max_turns=100000``); it is what
:func:`~opticmem.stores.open_store` (and so ``OpticalMemory("redis://…")``) opens
``redis://`` and ``rediss://`` URLs with.

Redis Cluster
-------------
The same store runs on a Redis Cluster; name any one node and say it is a cluster::

    RedisStore.from_url("redis://node-1:7000", cluster=True, tenant="acme")
    RedisStore.from_store_url("redis://node-1:7000?cluster=1&tenant=acme")  # open_store too
    RedisStore(redis.cluster.RedisCluster(...), redis.asyncio.cluster.RedisCluster(...))

redis-py's cluster clients find the other nodes and follow ``MOVED``/``ASK``. Every key
of a session shares its hash tag (below), so a session lives in one slot on one primary:
its appends, scripts and ``MGET`` of blobs are single-slot, and the sessions spread over
the primaries. What differs on a cluster: :meth:`RedisStore.sessions` runs ``SCAN`` on
each primary in turn; an append to a digest-keyed session (see below) is a script rather
than MULTI/EXEC; a script is loaded on every primary; ``CLUSTERDOWN`` and ``TRYAGAIN``
replies (a failover, slots on the move) are retried like a lost connection. A cluster has
no database numbers. A plain URL that reaches a cluster node is logged as a warning, and a
session on another node then fails with a ``MOVED`` error that says to open it with
``cluster=True``.

Key layout
----------
Every key of a session carries one hash tag, so Redis Cluster keeps a session in one
slot and the Lua scripts below never fail with ``CROSSSLOT``::

    opticmem:{T:S}:turns   list    one JSON record per turn; list index == seq;
                                   "" marks a forgotten turn
    opticmem:{T:S}:pages   list    one JSON page record per page; index == page_no
    opticmem:{T:S}:meta    hash    id (only for digest-keyed ids, see below), forgot
                                   (turns below it are forgotten), border/bbytes (blob
                                   order and bytes), swept (last TTL sweep of blobs, ms),
                                   state:K (session state such as the decay mark: kept
                                   here, not as a blob, so no blob cap or sweep drops it),
                                   epoch (the session's life, Store.session_epoch)
    opticmem:{T:S}:blobs   zset    blob key -> put order (index for caps, TTL, delete)
    opticmem:{T:S}:b:K     string  one derived artefact: a 7-byte header (magic, flags,
                                   CRC-32) and its bytes, zlib-compressed when that pays

``T`` and ``S`` are the tenant and the session id, UTF-8 encoded and percent-escaped so
that only ``A-Z a-z 0-9 - _ .`` and ``%XX`` remain (``{ } : *``, spaces, ``~`` and all
else are escaped). An escaped form longer than :data:`MAX_DIRECT_ID_CHARS` becomes
``~`` + the SHA-256 of the id in hex, and the id itself goes into the meta hash so that
:meth:`RedisStore.sessions` can list it. The encoding is injective (a direct form never
holds ``~``, ``:`` or ``}``), so no id can reach another session's or another tenant's
keys, and ordinary ids stay readable for an operator (``opticmem:{default:user-42}:turns``).
Blob keys ``K`` are escaped the same way.

Session ids are opaque strings. The memory layer (:mod:`opticmem.sessions`) accepts 1 to
256 characters; this store accepts any ``str`` of valid Unicode up to
:data:`MAX_ID_BYTES` bytes of UTF-8 (so direct callers and hostile input are safe too).

Design
------
* **Turns in a list, index == seq.** An append is one ``RPUSH`` of the JSON records:
  Redis runs it atomically and returns the new length, which *is* the last seq, so
  concurrent writers get a total order with no gaps and no second key to keep in step.
  That is the same single command as the plain-list floor; the records carry no seq
  (the index is the seq). A whole-session read is one ``LRANGE``. A list beats a stream
  (entry IDs and field names on every entry, nested replies to parse on every read) and
  a hash (``HMGET`` of 10k field names per read, no cheap "last N").
* **Lua where a decision must be atomic**: with ``max_turns`` or ``ttl`` set, an append
  is a script (cap check, push, TTL refresh in one step); ``add_page`` compares
  ``page_no`` with ``LLEN`` and pushes only on equality (exactly-once, gaps refused;
  ``add_sealed_page`` also only while the turn list holds the page's turns and, given
  one, the session is still in the epoch the page was sealed in);
  ``put_blob`` (cap eviction), ``put_page_blob`` (writes only while the session still
  holds the page), ``swap_state`` (a compare-and-set of session state, with the same
  page check), ``forget_turns`` and ``delete_session`` are scripts too.
  Scripts declare the session's turn list as their one key (cluster routing) and name
  the session's other keys from it (same hash tag, same slot).
* **Forgetting** replaces a prefix of the list by empty tombstones (``LTRIM`` + ``LPUSH``):
  the text is gone, index == seq still holds (2 bytes per forgotten turn).
* **Blobs in their own string keys**, never in the hot turn list, read with one
  ``GET``/``MGET``.
* **Caps**: ``max_turns`` refuses an append that would hold more live (not forgotten)
  turns with :class:`SessionFullError` (nothing stored, never a silent loss);
  ``max_blob_bytes`` evicts the oldest *derived* blobs (recomputable) after a put.
* **Sliding TTL** (off by default): every write refreshes the session's keys to ``ttl``
  — except an artefact of a page (:meth:`RedisStore.put_page_blob`, what the memory and
  the recollection workers cache), which gets what is left of the session's life;
  blob keys get ``ttl`` when put and are swept (refreshed) by the first write after
  ``ttl/4``, so a blob may expire up to ``ttl/4`` before its session (a cache eviction
  the store contract allows) but never outlives it.
* Records are JSON (the :class:`~opticmem.records.Turn` fields, and
  :class:`~opticmem.records.PageRecord`'s own form), blobs raw bytes; nothing is pickled.
  :meth:`RedisStore.sessions` uses ``SCAN``, never ``KEYS``.

Faults and durability
---------------------
* Unreachable at start: :meth:`RedisStore.from_url` pings once, without retries, and
  raises :class:`~opticmem.errors.StoreUnavailableError` naming the URL (password
  hidden). Later, a lost connection is retried by the store with jittered exponential
  backoff (``retries``, about 15 s in all by default), through a server restart
  included (on a cluster, a node's restart or failover too: ``CLUSTERDOWN``,
  ``TRYAGAIN``); when the retries run out the same typed error is raised.
* A retried append is never stored twice. The first record of every append carries a
  unique token (``"w"``); when an append fails with a connection error the store does
  not resend it blindly but runs a script that looks for the token among the session's
  last :data:`RETRY_WINDOW` turns and appends only if it is not there (the server may
  have executed the append and died before replying). Clients that :meth:`from_url`
  opens (cluster clients included) have redis-py's own retries off for this reason; a
  client you pass in keeps its settings, and if it retries commands itself the store logs
  a warning.
* "Durable on return" means the server replied. A turn survives a crash or restart of
  the server only as far as its persistence allows: with ``appendonly yes`` and
  ``appendfsync always`` every acknowledged turn survives; ``everysec`` (the usual AOF
  setting) may lose the last second; without AOF, all since the last snapshot. Use
  ``maxmemory-policy noeviction``: an eviction policy may drop archived turns.
  :meth:`RedisStore.from_url` logs a warning when it sees either risk. A session whose
  turn list was evicted while its pages stayed makes the memory's ``context`` raise
  :class:`~opticmem.errors.CorruptRecordError` (delete the session to begin it again)
  rather than leave every turn added since out of the context.
* A value larger than the server takes in one piece (a turn's record, a page, a blob or
  a state value over its ``proto-max-bulk-len``, 512 MB by default, or over its
  ``client-query-buffer-limit`` if that is lower) raises
  :class:`~opticmem.errors.RecordTooLargeError` at once, nothing stored. The server
  closes the connection on such a value, most often before its reply can be read, so
  the store refuses it before sending: a write holding a value over
  :data:`ALWAYS_FITS` (1 MB, which every server takes) is checked against the limits
  read with ``CONFIG GET`` (once per store; again before a refusal and after a failure).
  Where ``CONFIG`` is not allowed, the refusal is recognised from Redis's reply, or from
  the connection closed on the value twice while the server answers in between.
* A record or blob that fails validation raises
  :class:`~opticmem.errors.CorruptRecordError` naming the Redis key and the seq, page or
  blob; the session's other turns, pages and blobs stay readable.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import hashlib
import itertools
import json
import logging
import math
import os
import re
import socket
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast
from urllib.parse import (
    parse_qs,
    parse_qsl,
    quote,
    unquote_to_bytes,
    urlencode,
    urlsplit,
    urlunsplit,
)

try:
    import redis
    import redis.asyncio as aredis
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import AbstractBackoff, ExponentialWithJitterBackoff, NoBackoff
    from redis.cluster import RedisCluster
    from redis.connection import URL_QUERY_ARGUMENT_PARSERS
    from redis.exceptions import NoScriptError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    from importlib.metadata import PackageNotFoundError, version

    try:  # an older redis-py is the reason: it said "redis-py 5 or newer" to one who had it
        installed = f"; {version('redis')} is installed"
    except PackageNotFoundError:
        installed = ""
    raise ImportError(
        f"opticmem's Redis store needs the 'redis' package (redis-py 6.1 or newer"
        f"{installed}): pip install 'opticmem[redis]'"
    ) from exc

from opticmem.errors import (
    ConfigurationError,
    CorruptRecordError,
    InvalidSessionError,
    InvalidTurnError,
    OpticMemError,
    PageConflictError,
    RecordTooLargeError,
    SessionFullError,
    StoreError,
    StoreUnavailableError,
    StoreURLError,
)
from opticmem.records import PageRecord, Turn
from opticmem.store import (
    Store,
    new_epoch,
    sealed_in_another_life,
    sealed_over_missing_turns,
)
from opticmem.stores import redact_url

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_REDIS_PY = "6.1"
"""The oldest redis-py the store works with (pyproject's ``redis`` extra asks for it): 6.0
is the first with the jittered backoff it retries with, 6.1 the first whose cluster
pipelines take MULTI/EXEC (the recollection queue's acknowledgements on a cluster)."""

MAX_ID_BYTES = 65_536
"""Longest session id (or tenant, or blob key) this store accepts, in UTF-8 bytes.

The memory layer's own limit is tighter (256 characters, :mod:`opticmem.sessions`);
this one only keeps a direct caller from sending megabyte ids to the server.
"""

MAX_DIRECT_ID_CHARS = 128
"""Escaped ids longer than this are keyed by ``~`` + SHA-256 (the id itself is in meta)."""

DEFAULT_RETRIES = 12
"""Connection retries before a call gives up (with the default backoff, about 15 s)."""

RETRY_WINDOW = 10_000
"""How far back (in turns) a retried append looks for its own token. An append is
recognised as already stored as long as fewer turns than this were appended to its
session between the lost reply and the retry."""

ALWAYS_FITS = (1 << 20) - 2
"""The largest value (bytes) every Redis server takes in one argument of a command: its
``proto-max-bulk-len`` and ``client-query-buffer-limit`` are at least 1 MB each, and a
value needs 2 bytes of the latter beyond its own. A write holding a larger one reads the
server's limits first (once per store) and raises
:class:`~opticmem.errors.RecordTooLargeError` rather than send one over them."""

_LIMIT_SETTINGS = ("proto-max-bulk-len", "client-query-buffer-limit")
"""The server settings that bound one value: a bulk string longer than the first is
refused ("Protocol error: invalid bulk length"), and a client whose query buffer grows
past the second (a value and its 2 closing bytes) is disconnected; either way the
connection is closed, most often before the reply can be read."""

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

_NO_GATE: AbstractAsyncContextManager[Any] = contextlib.nullcontext()

_DIRECT_RE = re.compile(r"[A-Za-z0-9_.\-]*(?:%[0-9A-F]{2}[A-Za-z0-9_.\-]*)*")
_DIGEST_RE = re.compile(r"~[0-9a-f]{64}")

# --------------------------------------------------------------------------- Lua
# Every script declares one key, the session's turn list (KEYS[1] = "...:turns"): that
# routes it to the session's slot on Redis Cluster. The session's other keys share its
# hash tag (same slot) and are named from it. A store's settings (TTL, caps) are written
# into its scripts' source, so a call sends only what changes per call.
_LUA_PRELUDE = r"""
local TTL = __TTL__
local BASE = string.sub(KEYS[1], 1, -6)

-- Sliding TTL: refresh the session's keys; sweep its blob keys every TTL/4.
local function touch()
  if TTL <= 0 then return end
  local meta, blobs = BASE .. 'meta', BASE .. 'blobs'
  redis.call('PEXPIRE', KEYS[1], TTL)
  redis.call('PEXPIRE', BASE .. 'pages', TTL)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local swept = tonumber(redis.call('HGET', meta, 'swept') or '0')
  if now - swept >= TTL / 4 then
    local prefix, total = BASE .. 'b:', 0
    for _, k in ipairs(redis.call('ZRANGE', blobs, 0, -1)) do
      if redis.call('PEXPIRE', prefix .. k, TTL) == 1 then
        total = total + redis.call('STRLEN', prefix .. k)
      else
        redis.call('ZREM', blobs, k)
      end
    end
    redis.call('HSET', meta, 'swept', now, 'bbytes', total)
  end
  redis.call('PEXPIRE', meta, TTL)
  redis.call('PEXPIRE', blobs, TTL)
end
"""

# Appends records ARGV[from..] after a cap check; stores the id ARGV[1] (if not '') for
# digest-keyed sessions. Returns {0, first_seq}, or {-1, live_turns} if the cap refused.
_LUA_PUSH = r"""
local MAX = __MAX__
local function push(from)
  local n = #ARGV - from + 1
  local len = redis.call('LLEN', KEYS[1])
  if MAX > 0 then
    local forgot = tonumber(redis.call('HGET', BASE .. 'meta', 'forgot') or '0')
    if len - forgot + n > MAX then return {-1, len - forgot} end
  end
  for lo = from, #ARGV, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(ARGV, lo, math.min(lo + 999, #ARGV)))
  end
  if ARGV[1] ~= '' then redis.call('HSETNX', BASE .. 'meta', 'id', ARGV[1]) end
  touch()
  return {0, len}
end
"""

# ARGV: 1 id or '', 2.. records. Used when the store has a TTL or a turn cap.
_LUA_APPEND = _LUA_PRELUDE + _LUA_PUSH + r"""
return push(2)
"""

# A retried append. ARGV: 1 id or '', 2 the first record's opening bytes (with its
# token), 3.. records. If the token is among the last WINDOW records, the append was
# stored before the reply got lost: returns {1, its seq}. Otherwise appends as above.
_LUA_RESOLVE = _LUA_PRELUDE + _LUA_PUSH + r"""
local WINDOW = __WINDOW__
local needle = ARGV[2]
local len = redis.call('LLEN', KEYS[1])
local floor = math.max(0, len - WINDOW)
local hi = len - 1
while hi >= floor do
  local lo = math.max(floor, hi - 255)
  local chunk = redis.call('LRANGE', KEYS[1], lo, hi)
  for i = #chunk, 1, -1 do
    if string.sub(chunk[i], 1, #needle) == needle then
      if ARGV[1] ~= '' then redis.call('HSETNX', BASE .. 'meta', 'id', ARGV[1]) end
      touch()
      return {1, lo + i - 1}
    end
  end
  hi = lo - 1
end
return push(3)
"""

# ARGV: 1 page_no, 2 page JSON, 3 (add_sealed_page) the turns the turn list must hold, or
# nothing, 4 (add_sealed_page with an epoch) the epoch the session must be in, or nothing.
# Returns {1, count} stored; {0, count} exists; {-1, count} gap; {-2, turns held} the turn
# list is too short (the session was deleted since the page was made); {-3, count} the
# session is in another life (deleted and begun again since the page was made).
_LUA_ADD_PAGE = _LUA_PRELUDE + r"""
local pages = BASE .. 'pages'
local n = redis.call('LLEN', pages)
local p = tonumber(ARGV[1])
if p < n then return {0, n} end
if p > n then return {-1, n} end
if ARGV[3] then
  local held = redis.call('LLEN', KEYS[1])
  if held < tonumber(ARGV[3]) then return {-2, held} end
end
if ARGV[4] and (ARGV[4] == '' or redis.call('HGET', BASE .. 'meta', 'epoch') ~= ARGV[4]) then
  return {-3, n}
end
redis.call('RPUSH', pages, ARGV[2])
touch()
return {1, n + 1}
"""

# The session's epoch (RedisStore.session_epoch). ARGV: 1 a fresh epoch, kept if the
# session has a turn list but no epoch yet (not asked for in this life, or stored before
# epochs existed). Returns '' for a session with no turn list, else its epoch. The meta hash
# gets what is left of the turn list's life (none if it has no expiry), as put_page_blob's
# keys do: a read is no activity of the session.
_LUA_EPOCH = _LUA_PRELUDE + r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return '' end
local meta = BASE .. 'meta'
local epoch = redis.call('HGET', meta, 'epoch')
if epoch then return epoch end
redis.call('HSET', meta, 'epoch', ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left > 0 then redis.call('PEXPIRE', meta, left) end
return ARGV[1]
"""

# holds(at): whether the session holds the page ARGV[at .. at + 4] names (page_no,
# first_seq, first_line, render_key, SHA-1 of the transcript: RedisStore._page_guard).
_LUA_HOLDS = r"""
local function holds(at)
  local raw = redis.call('LINDEX', BASE .. 'pages', ARGV[at])
  if not raw then return false end
  local ok, p = pcall(cjson.decode, raw)
  return ok and type(p) == 'table' and p.first_seq == tonumber(ARGV[at + 1])
    and p.first_line == tonumber(ARGV[at + 2]) and p.render_key == ARGV[at + 3]
    and type(p.transcript) == 'string' and redis.sha1hex(p.transcript) == ARGV[at + 4]
end
"""

# ARGV: 1 encoded blob key, 2 stored bytes. Returns how many older blobs the cap evicted.
# Expects LIFE (the blob key's TTL in ms, 0: none) and finish() (run after the write).
# A blob written into a session that expires, by a write that is no activity of the
# session: the blob's life and a finish that gives the session's blob keys the same rest.
_LUA_SESSION_REST = r"""
local function session_rest(left)
  return left, function()
    redis.call('PEXPIRE', BASE .. 'meta', left)
    redis.call('PEXPIRE', BASE .. 'blobs', left)
  end
end
"""
_LUA_BLOB_BODY = r"""
local MAXB = __MAXB__
local meta, blobs, prefix = BASE .. 'meta', BASE .. 'blobs', BASE .. 'b:'
local bk = prefix .. ARGV[1]
local old = redis.call('STRLEN', bk)
if LIFE > 0 then
  redis.call('SET', bk, ARGV[2], 'PX', LIFE)
else
  redis.call('SET', bk, ARGV[2])
end
redis.call('ZADD', blobs, redis.call('HINCRBY', meta, 'border', 1), ARGV[1])
local total = redis.call('HINCRBY', meta, 'bbytes', string.len(ARGV[2]) - old)
local evicted = 0
if MAXB > 0 and total > MAXB then
  -- recount exactly (blob keys may have expired on their own), then drop the oldest
  total = 0
  for _, k in ipairs(redis.call('ZRANGE', blobs, 0, -1)) do
    total = total + redis.call('STRLEN', prefix .. k)
  end
  while total > MAXB do
    local oldest = redis.call('ZRANGE', blobs, 0, 0)[1]
    if oldest == nil or oldest == ARGV[1] then break end
    total = total - redis.call('STRLEN', prefix .. oldest)
    redis.call('UNLINK', prefix .. oldest)
    redis.call('ZREM', blobs, oldest)
    evicted = evicted + 1
  end
  redis.call('HSET', meta, 'bbytes', total)
end
finish()
return evicted
"""
# put_blob: a write of the session, which refreshes its TTL (touch). A store without a
# TTL of its own cannot refresh it, so in a session that expires (its turn list's, else
# its meta hash's expiry) the blob, its index and the meta hash get what is left of the
# session's life, as put_page_blob's keys do: written with none, they outlived the session,
# and touch's sweep of the next session of that id took the old blob back into it.
_LUA_PUT_BLOB = _LUA_PRELUDE + _LUA_SESSION_REST + r"""
local LIFE, finish = TTL, touch
if TTL <= 0 then
  local left = redis.call('PTTL', KEYS[1])
  if left == -2 then left = redis.call('PTTL', BASE .. 'meta') end
  if left > 0 then LIFE, finish = session_rest(left) end
end
""" + _LUA_BLOB_BODY

# put_page_blob: as put_blob, but only while the session holds the page the artefact was
# made from (ARGV: 3 page_no, 4 first_seq, 5 first_line, 6 render_key, 7 SHA-1 of the
# transcript); returns -1 (nothing written, no key touched) if it does not. If the session
# expires, it gives the blob what is left of the session's life instead of refreshing the
# session: an artefact (a worker's reading, maybe minutes later) is not activity of the
# session. That holds whatever this store's own TTL is: a worker opened without the bots'
# ttl must not leave keys that outlive their session for ever, and one opened with a ttl
# the bots do not use must not set an expiry on a session meant to be kept for ever.
_LUA_PUT_PAGE_BLOB = _LUA_PRELUDE + _LUA_HOLDS + _LUA_SESSION_REST + r"""
if not holds(3) then return -1 end
local LIFE, finish = TTL, touch
local left = redis.call('PTTL', KEYS[1])
if left > 0 then
  LIFE, finish = session_rest(left)
elseif left == -1 then  -- a session without an expiry: the blob gets none either
  LIFE, finish = 0, function() end
end
""" + _LUA_BLOB_BODY

# ARGV: 1 before_seq. Returns the number of turns forgotten.
_LUA_FORGET = _LUA_PRELUDE + r"""
local meta = BASE .. 'meta'
local len = redis.call('LLEN', KEYS[1])
local forgot = tonumber(redis.call('HGET', meta, 'forgot') or '0')
local stop = math.min(math.max(tonumber(ARGV[1]), 0), len)
if stop <= forgot then return 0 end
if stop - forgot <= 256 then
  -- the usual call (a page's turns): blank them in place; rebuilding the head of the list
  -- cost every seal time in the session's length (15 ms at 100k turns), Redis blocked
  for i = forgot, stop - 1 do redis.call('LSET', KEYS[1], i, '') end
else
  redis.call('LTRIM', KEYS[1], stop, -1)
  local tomb = {}
  for i = 1, stop do
    tomb[#tomb + 1] = ''
    if #tomb == 1000 then
      redis.call('LPUSH', KEYS[1], unpack(tomb))
      tomb = {}
    end
  end
  if #tomb > 0 then redis.call('LPUSH', KEYS[1], unpack(tomb)) end
end
redis.call('HSET', meta, 'forgot', stop)
touch()
return stop - forgot
"""

# ARGV: 1 state key, 2 value. Session state lives in the meta hash (never evicted).
_LUA_PUT_STATE = _LUA_PRELUDE + r"""
redis.call('HSET', BASE .. 'meta', 'state:' .. ARGV[1], ARGV[2])
touch()
return 1
"""

# A compare-and-set of session state. ARGV: 1 state key, 2 '1' if a value is expected
# ('0': none may be stored), 3 the expected value, 4 the new value, 5.. the page the session
# must still hold (as put_page_blob's), or nothing. Returns 1 if it wrote, else 0 (no key
# touched). A write refreshes the session's TTL as put_state's does.
_LUA_SWAP_STATE = _LUA_PRELUDE + _LUA_HOLDS + r"""
if #ARGV > 4 and not holds(5) then return 0 end
local meta, field = BASE .. 'meta', 'state:' .. ARGV[1]
local cur = redis.call('HGET', meta, field)
if ARGV[2] == '1' then
  if cur ~= ARGV[3] then return 0 end
elseif cur then
  return 0
end
redis.call('HSET', meta, field, ARGV[4])
touch()
return 1
"""

# Deletes every key of the session. Returns how many keys existed.
_LUA_DELETE = _LUA_PRELUDE + r"""
local prefix, n = BASE .. 'b:', 0
for _, k in ipairs(redis.call('ZRANGE', BASE .. 'blobs', 0, -1)) do
  n = n + redis.call('UNLINK', prefix .. k)
end
return n + redis.call('UNLINK', KEYS[1], BASE .. 'meta', BASE .. 'pages', BASE .. 'blobs')
"""


@dataclass(frozen=True)
class _Lua:
    name: str
    source: str
    sha: str


@functools.lru_cache(maxsize=256)
def _lua(name: str, template: str, **settings: int) -> _Lua:
    """A script with the store's settings written in (``__TTL__`` and friends)."""
    source = template
    for key, value in settings.items():
        source = source.replace(f"__{key.upper()}__", str(int(value)))
    unset = re.search(r"__[A-Z]+__", source)
    if unset:  # pragma: no cover - a programming error every test would catch
        raise RuntimeError(f"script {name} has no value for {unset.group()}")
    return _Lua(name, source, hashlib.sha1(source.encode()).hexdigest())


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
    not exactly what :func:`encode_id` writes (a foreign or damaged key).

    >>> decode_direct_id("a%3Ab%7D%2A"), decode_direct_id("a%3ab")
    ('a:b}*', None)
    """
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
    turns: str
    pages: str
    meta: str
    blob_prefix: str
    id_arg: bytes
    """The session id for a digest-keyed session (appends store it in meta), else ``b""``."""


@functools.lru_cache(maxsize=16_384)
def _session_keys(tenant_enc: str, session: str) -> _Keys:
    enc = encode_id(session)
    base = f"opticmem:{{{tenant_enc}:{enc}}}:"
    return _Keys(session, base + "turns", base + "pages", base + "meta", base + "b:",
                 session.encode("utf-8") if enc.startswith("~") else b"")


def _is_cluster(client: Any) -> bool:
    """True for redis-py's Redis Cluster clients (sync or asyncio)."""
    return isinstance(client, (RedisCluster, AsyncRedisCluster))


def _cluster_url(url: str) -> str:
    """``url`` with ``cluster=1`` in its query: the store URL that opens it as a cluster."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, "cluster=1") if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _describe_client(client: Any) -> str:
    if _is_cluster(client):
        try:  # the first startup node, as a store URL that opens the same cluster
            node = next(iter(client.nodes_manager.startup_nodes.values()))
            return f"redis://{node.host}:{node.port}?cluster=1"
        except (AttributeError, StopIteration):
            return type(client).__name__
    try:
        kw = client.connection_pool.connection_kwargs
    except AttributeError:
        return type(client).__name__
    if "path" in kw:
        return f"unix://{kw['path']}?db={kw.get('db', 0)}"
    return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def _connection_kwargs(client: Any) -> Mapping[str, Any]:
    """The keyword arguments ``client`` makes its connections with ({} if unknown)."""
    try:
        kw = client.connection_pool.connection_kwargs
    except AttributeError:
        try:
            kw = client.get_connection_kwargs()  # cluster clients: one pool per node
        except AttributeError:
            return {}
    return kw if isinstance(kw, Mapping) else {}


def socket_timeout(client: Any) -> float | None:
    """Seconds ``client`` waits for a reply before it fails with a timeout (``None``: for
    ever, or unknown): a blocking read must ask the server to wait less than that."""
    timeout = _connection_kwargs(client).get("socket_timeout")
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        return float(timeout)
    return None


def _decodes_responses(client: Any) -> bool:
    return bool(_connection_kwargs(client).get("decode_responses", False))


def _client_retries(client: Any) -> int:
    """How often redis-py itself resends a failed command on ``client`` (0 if unknown)."""
    try:
        if _is_cluster(client):  # retried by the cluster client; its node connections never
            return int(client.retry.get_retries())
        retry = client.get_retry()
        if retry is not None:
            return int(retry.get_retries())
        kw = client.connection_pool.connection_kwargs  # no Retry given: redis-py's default
        return 1 if kw.get("retry_on_error") or kw.get("retry_on_timeout") else 0
    except (AttributeError, TypeError, ValueError):
        return 0


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
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_quote = json.encoder.encode_basestring  # the C escaper json.dumps(ensure_ascii=False) uses

Items = Sequence[tuple[str, str, float, Mapping[str, Any] | None]]


class _Tokens:
    """Unique append tokens: a random per-process prefix and a counter (fork-safe)."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = base64.urlsafe_b64encode(os.urandom(9)).decode()
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_TOKENS = _Tokens()


def _check_settings(tenant: object, ttl: object, max_turns: object, max_blob_bytes: object,
                    retries: object) -> None:
    """Refuse a store setting no server could make work (:class:`ConfigurationError`)."""
    if not isinstance(tenant, str) or not tenant:
        raise ConfigurationError(f"tenant must be a non-empty str, got {tenant!r}")
    encode_id(tenant, "tenant")
    _ms(ttl)  # type: ignore[arg-type]  # it checks the type itself
    for name, cap in (("max_turns", max_turns), ("max_blob_bytes", max_blob_bytes)):
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ConfigurationError(f"{name} must be a positive int or None, got {cap!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigurationError(f"retries must be an int >= 0, got {retries!r}")


def _record(token: str, role: str, text: str, ts: float, meta: Mapping[str, Any] | None) -> bytes:
    """One turn's JSON record; with a ``token``, it opens with ``{"w":"<token>",``.

    Built by formatting rather than by encoding a dict (a quarter of the time); the
    strings go through the json module's own escaping, so the record is ordinary JSON.
    """
    if type(role) is not str or type(text) is not str:
        raise InvalidTurnError(
            f"role and text must be str, got {type(role).__name__} and {type(text).__name__}"
        )
    try:
        t = float(ts)
    except (TypeError, ValueError):
        raise InvalidTurnError(f"timestamp must be Unix seconds (a number), got {ts!r}") from None
    if not math.isfinite(t):
        raise InvalidTurnError(f"timestamp must be finite, got {ts!r}")
    head = f'{{"w":"{token}",' if token else "{"
    try:
        if meta:
            body = f'"role":{_quote(role)},"text":{_quote(text)},"ts":{t!r},"meta":' \
                   f"{_JSON.encode(dict(meta))}}}"
        else:
            body = f'"role":{_quote(role)},"text":{_quote(text)},"ts":{t!r}}}'
        return (head + body).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidTurnError(
            f"turn holds a lone surrogate at index {exc.start}; the archive holds valid Unicode"
        ) from None
    except (TypeError, ValueError) as exc:
        raise InvalidTurnError(f"turn metadata cannot be stored as JSON: {exc}") from None


def _records(items: Items) -> tuple[list[bytes], str]:
    """The JSON records of an append (the first carries its token), and the token."""
    token = _TOKENS.next()
    return [_record(token if i == 0 else "", r, t, ts, m)
            for i, (r, t, ts, m) in enumerate(items)], token


def _needle(token: str) -> bytes:
    """The opening bytes of the record that carries ``token``."""
    return f'{{"w":"{token}",'.encode()


def _turn_from(session: str, seq: int, d: Any, key: str) -> Turn:
    if not isinstance(d, dict):
        raise CorruptRecordError(f"{key} turn {seq}: record is not a JSON object")
    role: Any = d.get("role")
    text: Any = d.get("text")
    ts: Any = d.get("ts")
    meta: Any = d.get("meta")
    if (
        type(role) is not str
        or type(text) is not str
        or type(ts) not in (float, int)
        or not (meta is None or type(meta) is dict)
    ):
        raise CorruptRecordError(f"{key} turn {seq}: record fields are missing or mistyped")
    try:
        t = float(ts)
    except OverflowError:  # an int beyond a float's range
        t = math.inf
    if not math.isfinite(t):  # JSON from elsewhere: append refuses such a time
        raise CorruptRecordError(f"{key} turn {seq}: its time is not a finite number")
    return Turn(session, seq, role, text, t, meta if meta is not None else {})


def _parse_turns(session: str, key: str, first: int, raw: Sequence[bytes]) -> list[Turn]:
    """Turns from ``LRANGE`` output starting at seq ``first``; tombstones are skipped.

    Parses the whole batch with one ``json.loads`` (much cheaper than one call per
    record) and falls back to record by record to name the first damaged one. A damaged
    record (truncated, not JSON, mistyped fields) always fails one of the checks; only two
    records forged together so that they re-split at the comma between them could pass.
    """
    seqs = [first + i for i, r in enumerate(raw) if r]
    live = [r for r in raw if r]
    if not live:
        return []
    docs: Any
    try:
        docs = json.loads(b"[" + b",".join(live) + b"]")
    except (ValueError, UnicodeDecodeError):
        docs = None
    if isinstance(docs, list) and len(docs) == len(live):
        try:
            return [_turn_from(session, seq, d, key) for seq, d in zip(seqs, docs, strict=True)]
        except CorruptRecordError:
            pass  # find the damaged record one by one below
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
            raise CorruptRecordError(f"{key} page {n}: the record says page {page.page_no}")
        out.append(page)
    return out


def _range(start: int, stop: int) -> tuple[int, int] | None:
    """``LRANGE`` bounds for ``start <= index < stop``, or ``None`` if empty."""
    lo, hi = max(start, 0), min(stop, 2**62) - 1
    return (lo, hi) if hi >= lo else None


# --------------------------------------------------------------------------- value sizes
@dataclass(frozen=True, slots=True)
class _Big:
    """The largest value of a write that holds one over :data:`ALWAYS_FITS`: its size in
    bytes as sent, and what it is, for the message that refuses it."""

    size: int
    label: str


def _big(values: Sequence[bytes], label: Callable[[int], str]) -> _Big | None:
    """``None`` if every value always fits (the usual case: no lookup, no string built);
    else the largest, named by ``label(its index)``."""
    size = max(map(len, values), default=0)
    if size <= ALWAYS_FITS:
        return None
    i = max(range(len(values)), key=lambda j: len(values[j]))
    return _Big(size, label(i))


def _turn_label(keys: _Keys, n: int) -> Callable[[int], str]:
    """Names turn ``i`` of an append of ``n`` turns to ``keys``'s session."""
    session = f"session {keys.session[:200]!r}"
    if n == 1:
        return lambda i: f"the turn appended to {session}"
    return lambda i: f"turn {i} of the {n} appended to {session}"


def _page_big(page: PageRecord, data: bytes) -> _Big | None:
    return _big([data], lambda _: f"page {page.page_no} of session {page.session[:200]!r}")


def _value_big(what: str, key: str, session: str, *values: bytes) -> _Big | None:
    """A blob's or a state value's :class:`_Big` (``what``: ``"blob"`` or ``"state"``)."""
    return _big(values, lambda _: f"{what} {key[:200]!r} of session {session[:200]!r}")


def _config_values(reply: Any, name: str) -> list[int]:
    """The values of setting ``name`` in a ``CONFIG GET`` reply: a mapping of setting to
    value, or (from a cluster client asked on several nodes) a mapping of node to that."""
    out: list[int] = []
    if isinstance(reply, Mapping):
        for key, value in reply.items():
            if (key.decode("utf-8", "replace") if isinstance(key, bytes) else key) == name:
                with contextlib.suppress(TypeError, ValueError):
                    out.append(int(value))
            elif isinstance(value, Mapping):
                out += _config_values(value, name)
    return out


def _limit_of(replies: Sequence[Any]) -> tuple[int, str] | None:
    """The most bytes one value may hold and the setting that bounds it, from the replies
    of ``CONFIG GET`` for each of :data:`_LIMIT_SETTINGS` (on a cluster, the least of its
    primaries'); ``None`` if a reply does not hold its setting."""
    best: tuple[int, str] | None = None
    for name, reply in zip(_LIMIT_SETTINGS, replies, strict=True):
        values = _config_values(reply, name)
        if not values:
            return None
        limit = min(values) - (2 if name == "client-query-buffer-limit" else 0)
        if best is None or limit < best[0]:
            best = (limit, name)
    return best


def _bulk_refused(exc: Exception) -> bool:
    """True for Redis's refusal of a value over its ``proto-max-bulk-len`` (when the reply
    could be read before the server closed the connection)."""
    return isinstance(exc, redis.exceptions.ResponseError) and "invalid bulk length" in str(exc)


# --------------------------------------------------------------------------- the store
_REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.RedisError, redis.exceptions.RedisClusterException,
)
"""What redis-py raises: its cluster client's own errors do not derive from RedisError."""

_RETRYABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
    # Redis Cluster, while a node fails over or slots move: the command did not run
    redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    # ... or while no node is reachable (this error only in newer redis-py)
    *(getattr(redis.exceptions, name) for name in ("RedisClusterUnreachableError",)
      if hasattr(redis.exceptions, name)),
)

REDIS_ERRORS = _REDIS_ERRORS
"""What redis-py may raise, for code that uses a store's client directly (the
recollection queue, :mod:`opticmem.recollect_queue`)."""
RETRYABLE_ERRORS = _RETRYABLE
"""Those of :data:`REDIS_ERRORS` after which the same call may be tried again: the server
could not be reached, or a cluster was between states."""



class _ClosingPool(redis.ConnectionPool):
    """The sync connection pool :meth:`RedisStore.from_url` opens: :meth:`close_idle`
    closes it under calls other threads are making.

    redis-py's own ``close`` closes the connections in use too: a thread whose append
    was on the wire then failed (``AttributeError: 'NoneType' object has no attribute
    'readline'``, or a connection error that its retry reported as a closed store) while
    the server stored the turn. Here a call in flight finishes on its connection, which
    closes as it is given back.
    """

    _closing = False

    def close_idle(self) -> None:
        """Close the idle connections now and each one in use when it is given back."""
        with self._lock:
            self._closing = True
        self.disconnect(inuse_connections=False)

    def release(self, connection: Any) -> None:
        super().release(connection)
        if self._closing:
            connection.disconnect()

def _async_connections(client: Any) -> list[Any]:
    """The connections a redis-py async client holds, idle and in use: its pool's, or a
    cluster client's, node by node (``[]`` where redis-py keeps them otherwise)."""
    found: list[Any] = []
    pool = getattr(client, "connection_pool", None)
    for name in ("_available_connections", "_in_use_connections"):
        found.extend(getattr(pool, name, None) or ())
    nodes = getattr(getattr(client, "nodes_manager", None), "nodes_cache", None)
    for node in (nodes.values() if isinstance(nodes, Mapping) else ()):
        found.extend(getattr(node, "_connections", None) or ())
    return found


def _shut_async_client(client: Any) -> None:
    """Shut the sockets of an async client whose event loop no longer runs (or ended),
    now and without it: the server drops the connections (Redis counts them against
    ``maxclients``), where closing them takes the loop they belong to and they were
    otherwise kept until the client was garbage-collected — which a reference cycle
    puts off indefinitely. The file descriptors close as the client is collected."""
    for conn in _async_connections(client):
        transport = getattr(getattr(conn, "_writer", None), "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(text)
    return value


def _nonempty(text: str) -> str:
    if not text:
        raise ValueError(text)
    return text


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


_URL_SETTINGS: dict[str, Callable[[str], Any]] = {
    "tenant": _nonempty, "ttl": _positive_seconds, "max_turns": _positive_int,
    "max_blob_bytes": _positive_int, "cluster": _flag,
}
"""Query parameters :meth:`RedisStore.from_store_url` reads as store settings."""


MAX_TTL_SECONDS = 1_000 * 365 * 86_400
"""Longest ``ttl`` a store takes (a thousand years; ``None`` keeps sessions for ever).
The TTL is written into the store's scripts as milliseconds, and Redis refuses an expiry
beyond a 64-bit count of milliseconds: a longer one (``ttl=1e300``) was taken, and every
write of every session then failed."""


def _ms(ttl: float | timedelta | None) -> int:
    if ttl is None:
        return 0
    try:
        seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    except (TypeError, ValueError, OverflowError):
        raise ConfigurationError(f"ttl must be positive seconds or None, got {ttl!r}") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigurationError(f"ttl must be positive seconds or None, got {ttl!r}")
    if seconds > MAX_TTL_SECONDS:
        raise ConfigurationError(f"ttl must be at most {MAX_TTL_SECONDS:,} seconds (a "
                                 f"thousand years; None keeps sessions for ever), got {ttl!r}")
    return max(1, round(seconds * 1000))


def _refuse_url_settings(url: str, safe: str) -> None:
    """Raise :class:`StoreURLError` if ``url``'s query holds opticmem's settings, which
    :meth:`RedisStore.from_url` takes as keyword arguments: passed on, redis-py refused
    them with a bare ``TypeError`` about a connection argument."""
    try:
        keys = {k for k, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    except ValueError:
        return  # malformed: redis-py says how
    found = [k for k in _URL_SETTINGS if k in keys]
    if found:
        given = ", ".join(f"?{k}=" for k in found)
        raise StoreURLError(
            f"Redis URL {safe} holds opticmem settings ({given}): RedisStore.from_url takes "
            f"them as keyword arguments; RedisStore.from_store_url (or open_store, or "
            f"OpticalMemory(url)) reads them from the URL")



_URL_OPTION_VALUES: dict[str, str] = {
    "db": "a database number: an int >= 0",
    "socket_timeout": "seconds: a number > 0",
    "socket_connect_timeout": "seconds: a number > 0",
    "timeout": "seconds: a number > 0",
    "health_check_interval": "seconds: an int",
    "max_connections": "an int >= 0 (0: redis-py's default)",
    "socket_read_size": "bytes: an int",
    "ssl_min_version": "an int (an ssl.TLSVersion value)",
    "protocol": "2 or 3",
    "ssl_cert_reqs": "none, optional or required",
}
"""What the redis-py options of a Redis URL take, for the message that refuses a value."""

_URL_TIMEOUTS = ("socket_timeout", "socket_connect_timeout", "timeout")
_ZERO_TIMEOUT = ("0 makes the socket non-blocking, so a reply not there at once fails; "
                 "leave the option out for the default")


def _bad_url_option(name: str, value: str, safe: str, why: str = "") -> StoreURLError:
    takes = _URL_OPTION_VALUES.get(name, "a value redis-py takes")
    return StoreURLError(f"bad {name}={value!r} in Redis URL {safe}: {name} takes {takes}"
                         + (f" ({why})" if why else ""))


def _check_url_location(url: str, safe: str) -> None:
    """Raise :class:`StoreURLError` for a ``redis://`` or ``rediss://`` URL whose path is
    not a database number, whose ``?db=`` says another one than its path, or whose port is
    out of range.

    redis-py reads the path's digits with every ``/`` taken out and ignores a path that is
    not a number: ``redis://host/cache`` used database 0, ``redis://host/1/2`` database 12,
    and ``redis://host/1?db=2`` database 2, silently — the bots' sessions in a database
    their operator never named."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError as exc:
        raise StoreURLError(f"bad Redis URL {safe}: {exc}") from None
    if parts.scheme.lower() not in ("redis", "rediss"):
        return
    path = unquote_to_bytes(parts.path).decode("utf-8", "replace")
    digits = path[1:] if path.startswith("/") else path
    if digits and not (digits.isascii() and digits.isdigit()):
        raise StoreURLError(f"bad database {path!r} in Redis URL {safe}: the path is a "
                            "database number (redis://host:6379/0), or nothing for 0")
    try:
        query = parse_qs(parts.query)
    except ValueError:
        return  # malformed: from_url says how
    named = (query.get("db") or [""])[0].strip()
    # a db that is no number >= 0 is left to the option check, which says what db takes
    if digits and named.isascii() and named.isdigit() and int(named) != int(digits):
        raise StoreURLError(f"Redis URL {safe} names database {int(digits)} in its path and "
                            f"db={named} in its query: give it once")


def _check_url_options(url: str, safe: str, common: Mapping[str, Any]) -> None:
    """Raise :class:`StoreURLError` naming a query option of ``url`` whose value redis-py
    cannot use, before anything connects.

    redis-py parses the options only as far as their types (a bad one is a bare
    ``ValueError``), and checks the rest only once it connects: a timeout out of range,
    ``protocol=9`` or ``ssl_cert_reqs=bogus`` then failed as "cannot reach Redis". Its own
    parsers and connection constructor are run here; an unknown option is left to
    redis-py (a ``TypeError``), and a URL malformed otherwise to :meth:`RedisStore.from_url`.
    """
    _check_url_location(url, safe)
    try:
        options = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}  # as redis-py
    except ValueError:
        return  # malformed: from_url says how
    for name, value in options.items():
        parser = cast("Callable[[str], Any] | None", URL_QUERY_ARGUMENT_PARSERS.get(name))
        if parser is None:
            continue
        try:
            parsed = parser(value)
            if name in _URL_TIMEOUTS:
                with socket.socket() as probe:  # the sockets redis-py opens take it
                    probe.settimeout(parsed)
            elif name in ("db", "max_connections") and parsed < 0:
                raise ValueError(value)
        except (TypeError, ValueError, OverflowError):
            raise _bad_url_option(name, value, safe) from None
        if name in _URL_TIMEOUTS and parsed == 0:
            raise _bad_url_option(name, value, safe, _ZERO_TIMEOUT)
    try:
        pool = redis.ConnectionPool.from_url(url, **common)
    except (TypeError, ValueError):
        return  # not an option's value (a scheme, a host, ...): from_url says how
    kwargs = pool.connection_kwargs
    make = pool.connection_class
    try:  # builds a connection object, connects nothing
        make(**kwargs)
    except TypeError:
        return  # an option redis-py does not take: from_url says which
    except (ValueError, redis.exceptions.RedisError) as exc:
        base = {k: v for k, v in kwargs.items() if k not in options}
        for name in options:
            try:
                make(**base, **{name: kwargs[name]})
            except (TypeError, KeyError):
                continue
            except (ValueError, redis.exceptions.RedisError):
                raise _bad_url_option(name, options[name], safe, str(exc)) from None
        raise StoreURLError(f"bad options in Redis URL {safe}: {exc}") from None


class RedisStore(Store):
    """A :class:`~opticmem.store.Store` in Redis (see the module docstring for the layout).

    Build it with :meth:`from_url`, or wrap clients you already have::

        RedisStore(client=redis.Redis(...), aclient=redis.asyncio.Redis(...), tenant="acme")

    On Redis Cluster, pass redis-py's cluster clients instead
    (``redis.cluster.RedisCluster``, ``redis.asyncio.cluster.RedisCluster``; both or
    neither), or open one with :meth:`from_url` and ``cluster=True``.

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
    ``retries`` and ``backoff`` say how a call that lost its connection is retried.
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster | None = None,
        aclient: aredis.Redis | AsyncRedisCluster | None = None,
        *,
        tenant: str = "default",
        ttl: float | timedelta | None = None,
        max_turns: int | None = None,
        max_blob_bytes: int | None = None,
        compress_blobs: bool = True,
        retries: int = DEFAULT_RETRIES,
        backoff: AbstractBackoff | None = None,
        _url: str | None = None,
        _aclient_factory: Callable[[], aredis.Redis | AsyncRedisCluster] | None = None,
        _aclient_limit: int | None = None,
    ) -> None:
        if client is None and aclient is None and _aclient_factory is None:
            raise ConfigurationError(
                "RedisStore needs a client, an aclient or both (or use from_url)")
        for c in (client, aclient):
            if c is not None and _decodes_responses(c):
                raise ConfigurationError(
                    "RedisStore needs a client with decode_responses=False (blobs are bytes)"
                )
        if client is not None and aclient is not None and _is_cluster(client) != _is_cluster(
            aclient
        ):
            raise ConfigurationError(
                "RedisStore's client and aclient must both be Redis Cluster clients or neither "
                f"(got {type(client).__name__} and {type(aclient).__name__})"
            )
        _check_settings(tenant, ttl, max_turns, max_blob_bytes, retries)
        self.tenant = tenant
        self._tenant_enc = encode_id(tenant, "tenant")
        self.ttl_ms = _ms(ttl)
        self.max_turns = max_turns
        self.max_blob_bytes = max_blob_bytes
        self.compress_blobs = compress_blobs
        self.retries = retries
        self._backoff = backoff or ExponentialWithJitterBackoff(cap=2.0, base=0.05)
        self.cluster = _is_cluster(client or aclient)
        """True when the store talks to a Redis Cluster."""
        url = _cluster_url(_url) if _url and self.cluster else _url
        self.url = redact_url(url) if url else _describe_client(client or aclient)
        """Where the server is, for messages (any password replaced by ``***``)."""
        ttl_ms, maxn = self.ttl_ms, max_turns or 0
        self._scripted_appends = bool(ttl_ms or maxn)
        self._append_lua = _lua("append", _LUA_APPEND, ttl=ttl_ms, max=maxn)
        self._resolve_lua = _lua("append (retry)", _LUA_RESOLVE, ttl=ttl_ms, max=maxn,
                                 window=RETRY_WINDOW)
        self._page_lua = _lua("add_page", _LUA_ADD_PAGE, ttl=ttl_ms)
        self._epoch_lua = _lua("session_epoch", _LUA_EPOCH, ttl=ttl_ms)
        self._blob_lua = _lua("put_blob", _LUA_PUT_BLOB, ttl=ttl_ms, maxb=max_blob_bytes or 0)
        self._page_blob_lua = _lua("put_page_blob", _LUA_PUT_PAGE_BLOB, ttl=ttl_ms,
                                   maxb=max_blob_bytes or 0)
        self._forget_lua = _lua("forget_turns", _LUA_FORGET, ttl=ttl_ms)
        self._state_lua = _lua("put_state", _LUA_PUT_STATE, ttl=ttl_ms)
        self._swap_lua = _lua("swap_state", _LUA_SWAP_STATE, ttl=ttl_ms)
        self._delete_lua = _lua("delete_session", _LUA_DELETE, ttl=ttl_ms)
        self._client = client
        self._aclient = aclient
        self._aclient_factory = _aclient_factory
        self._aclients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, aredis.Redis | AsyncRedisCluster
        ] = weakref.WeakKeyDictionary()
        self._aclients_pid = os.getpid()
        self._aclients_lock = threading.Lock()
        """Guards the per-loop clients and gates: threads that each run event loops add
        and drop them at once (iterating a dict another thread changes raises)."""
        # A cluster client from from_url has no blocking pool: at most this many calls
        # at a time per event loop, so tasks wait for a connection instead of failing
        self._aclient_limit = _aclient_limit
        self._agates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._owns_clients = _url is not None  # from_url opened them: close() closes them
        self._closed = False
        self._limit: tuple[int, str] | None = None
        """The most bytes the server takes in one value and the setting that says so, as
        last read (:meth:`_read_limit`); ``None``: not known."""
        self._limit_read = False
        """Whether :attr:`_limit` was read (or found unreadable): a write of a value over
        :data:`ALWAYS_FITS` reads it first otherwise."""
        for c in (client, aclient):
            if c is not None and _client_retries(c) > 0:
                log.warning(
                    "the Redis client given to RedisStore resends failed commands itself "
                    "(%d retries): an append whose reply is lost may then be stored twice. "
                    "Build it with retry=Retry(NoBackoff(), 0) and let the store retry "
                    "(it recognises appends that were already stored).", _client_retries(c)
                )

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
        backoff: AbstractBackoff | None = None,
        max_connections: int = 64,
        socket_timeout: float | None = 10.0,
        socket_connect_timeout: float | None = 5.0,
        check: bool = True,
        cluster: bool = False,
        **redis_kwargs: Any,
    ) -> RedisStore:
        """Open a store on the Redis server at ``url`` (``redis://``, ``rediss://``,
        ``unix://``): a sync client now, an async client per event loop on first use.
        Extra keyword arguments go to redis-py's connection pools.

        With ``check`` (default) the server is pinged once, without retries, so a wrong
        URL fails here with :class:`~opticmem.errors.StoreUnavailableError`; the server's
        persistence and eviction settings are logged if they put turns at risk. A lost
        connection later is retried ``retries`` times with jittered exponential backoff
        (up to 0.1 s, doubling to 2 s: about 15 s in all by default). Each async client
        keeps at most ``max_connections`` connections; tasks beyond that wait for one.

        With ``cluster=True``, ``url`` names any one node of a Redis Cluster (``redis://``
        or ``rediss://``, no database number) and the store uses redis-py's cluster
        clients, which find the other nodes from it. The cluster client connects to the
        cluster here, ``check`` or not; ``check`` then reads every primary's settings.
        On a cluster each event loop's client makes at most ``max_connections`` calls at
        a time (so at most that many connections to a node).
        """
        if not isinstance(url, str) or not url:
            raise ConfigurationError(f"not a Redis URL: {url!r}")
        safe = redact_url(url)
        _refuse_url_settings(url, safe)
        # refused before anything connects: against a server out of reach a bad setting
        # was a StoreUnavailableError, and the check's warnings came first
        _check_settings(tenant, ttl, max_turns, max_blob_bytes, retries)
        for name, seconds in (("socket_timeout", socket_timeout),
                              ("socket_connect_timeout", socket_connect_timeout)):
            if seconds is not None and not (
                isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
                and 0 < seconds < float("inf")
            ):
                raise ConfigurationError(
                    f"{name} must be a number of seconds > 0 or None (no limit), got {seconds!r}")
        common: dict[str, Any] = dict(
            decode_responses=False,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            **redis_kwargs,
        )
        if cluster:
            return cls._from_cluster_url(
                url, safe, common, check=check, max_connections=max_connections,
                tenant=tenant, ttl=ttl, max_turns=max_turns, max_blob_bytes=max_blob_bytes,
                compress_blobs=compress_blobs, retries=retries, backoff=backoff,
            )
        _check_url_options(url, safe, common)
        if check:
            _check_server(url, safe, common, ttl is not None)
        try:  # redis-py's own retries off: the store retries, recognising stored appends
            pool = _ClosingPool.from_url(url, retry=Retry(NoBackoff(), 0), **common)
        except ValueError as exc:
            raise StoreError(f"bad Redis URL {safe}: {exc}") from exc

        def make_aclient() -> aredis.Redis:
            apool = aredis.BlockingConnectionPool.from_url(
                url, retry=AsyncRetry(NoBackoff(), 0), max_connections=max_connections,
                timeout=None, **common,
            )
            return aredis.Redis.from_pool(apool)

        return cls(
            redis.Redis.from_pool(pool), None, tenant=tenant, ttl=ttl,
            max_turns=max_turns, max_blob_bytes=max_blob_bytes, compress_blobs=compress_blobs,
            retries=retries, backoff=backoff, _url=url, _aclient_factory=make_aclient,
        )

    @classmethod
    def _from_cluster_url(
        cls, url: str, safe: str, common: dict[str, Any], *, check: bool,
        max_connections: int, **settings: Any,
    ) -> RedisStore:
        """:meth:`from_url` with ``cluster=True``."""
        # redis-py's cluster client drops query parameters it does not pass on to its
        # connections without a word; refuse them (a typo) as one server's pool does
        allowed = getattr(redis.cluster, "REDIS_ALLOWED_KEYS", None)
        unknown = sorted({k for k, _ in parse_qsl(urlsplit(url).query)} - set(allowed or ()))
        if allowed and unknown:
            raise TypeError(f"unexpected parameter(s) {', '.join(unknown)} in a Redis Cluster "
                            f"URL (redis-py's cluster client ignores them)")
        _check_url_options(url, safe, common)
        # A database number is a mistake in the URL, not a server out of reach: redis-py
        # refused it with a cluster error, reported as StoreUnavailableError (a
        # ConnectionError, which a caller waiting for Redis to come up retries for ever)
        try:
            db = redis.connection.parse_url(url).get("db", 0)
        except ValueError:
            db = 0  # malformed otherwise: RedisCluster.from_url says how, below
        if db:
            raise StoreURLError(f"bad database {db} in Redis Cluster URL {safe}: a Redis "
                                "Cluster has only database 0; leave the database out")
        try:  # redis-py's own retries off, as for one server (the cluster client's too)
            client = RedisCluster.from_url(url, retry=Retry(NoBackoff(), 0), **common)
        except ValueError as exc:
            raise StoreError(f"bad Redis Cluster URL {safe}: {exc}") from exc
        except redis.exceptions.AuthenticationError as exc:
            raise StoreUnavailableError(
                f"Redis Cluster at {safe} refused the credentials: {exc}"
            ) from exc
        except _REDIS_ERRORS as exc:  # unreachable, not a cluster node, db != 0, ...
            raise StoreUnavailableError(
                f"cannot open Redis Cluster at {safe}: {exc}"
            ) from exc
        try:
            if check:
                _check_cluster(client, safe, settings["ttl"] is not None)

            def make_aclient() -> AsyncRedisCluster:
                return AsyncRedisCluster.from_url(
                    url, retry=AsyncRetry(NoBackoff(), 0), max_connections=max_connections,
                    **common,
                )

            return cls(client, None, **settings, _url=url, _aclient_factory=make_aclient,
                       _aclient_limit=max_connections)
        except BaseException:
            client.close()
            raise

    @classmethod
    def from_store_url(cls, url: str) -> RedisStore:
        """Open a store from one URL, with opticmem's settings in its query string.

        ``tenant`` (non-empty), ``ttl`` (positive seconds), ``max_turns`` and
        ``max_blob_bytes`` (positive integers) and ``cluster`` (``1``/``true``/``yes`` or
        ``0``/``false``/``no``: see :meth:`from_url`) are read from the query; any other
        parameter is left for redis-py (``socket_timeout=5``, ...).
        This is the form a store registry or a command line takes::

            RedisStore.from_store_url("redis://:pw@cache:6379/2?tenant=acme&ttl=86400")
            RedisStore.from_store_url("redis://node-1:7000?cluster=1&tenant=acme")

        A setting given twice with different values (``?tenant=a&tenant=b``: a worker
        then served the last one's queue), a bad value of a setting or of a redis-py
        option (``socket_timeout=abc``, ``protocol=9``), or a parameter redis-py does not
        know either, raises
        :class:`~opticmem.errors.StoreURLError` (a ``ValueError``) naming it, before
        anything connects, the URL's password hidden.
        """
        try:
            parts = urlsplit(url)
        except (TypeError, ValueError, AttributeError) as exc:
            raise StoreURLError(f"not a Redis URL: {url!r}") from exc
        try:  # strictly: read leniently, "caf%E9" and "caf%E8" would be one tenant
            query = parse_qsl(parts.query, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise StoreURLError(f"Redis store URL {redact_url(url)}: its query is not UTF-8 "
                                "once %-decoded") from None
        ours: dict[str, Any] = {}
        rest = []
        for key, value in query:
            if key not in _URL_SETTINGS:
                rest.append((key, value))
                continue
            try:
                parsed = _URL_SETTINGS[key](value)
            except ValueError:
                raise StoreURLError(
                    f"bad {key}={value!r} in Redis store URL {redact_url(url)}"
                ) from None
            if key in ours and ours[key] != parsed:  # the last one won, silently
                raise StoreURLError(f"Redis store URL {redact_url(url)} gives {key} twice, "
                                    "with different values: give it once")
            ours[key] = parsed
        # Not urlunsplit: with no host it writes unix:///path as unix:/path, which redis-py
        # refuses
        clean = f"{parts.scheme}://{parts.netloc}{parts.path}" + "".join(
            f"{mark}{part}" for mark, part in (("?", urlencode(rest)), ("#", parts.fragment))
            if part
        )
        try:
            return cls.from_url(clean, **ours)
        except ConfigurationError as exc:  # a setting the store cannot work with
            raise StoreURLError(f"Redis store URL {redact_url(url)}: {exc}") from None
        except OpticMemError:
            raise
        except TypeError as exc:  # redis-py takes no such connection parameter
            raise StoreURLError(
                f"Redis store URL {redact_url(url)} has a parameter that is neither an "
                f"opticmem setting ({', '.join(_URL_SETTINGS)}) nor a redis-py one: {exc}"
            ) from None
        except ValueError as exc:  # a parameter the store cannot work with
            raise StoreURLError(f"Redis store URL {redact_url(url)}: {exc}") from None

    # ------------------------------------------------------------------ plumbing
    def _keys(self, session: str) -> _Keys:
        if type(session) is not str:
            raise InvalidSessionError(f"session id must be a str, got {type(session).__name__}")
        return _session_keys(self._tenant_enc, session)

    def _sync(self) -> redis.Redis | RedisCluster:
        if self._client is None or self._closed:
            if self._closed:
                raise StoreError(f"Redis store at {self.url} is closed")
            raise StoreError(
                "this RedisStore was given only an async client: use the a-prefixed methods"
            )
        return self._client

    def _async(self) -> aredis.Redis | AsyncRedisCluster:
        if self._closed:
            raise StoreError(f"Redis store at {self.url} is closed")
        if self._aclient is not None:
            return self._aclient
        if self._aclient_factory is None:
            raise StoreError("this RedisStore has no async client")
        if self._aclients_pid != os.getpid():  # a forked child: the parent's lock may be held
            self._aclients, self._aclients_pid = weakref.WeakKeyDictionary(), os.getpid()
            self._agates = weakref.WeakKeyDictionary()
            self._aclients_lock = threading.Lock()
        loop = asyncio.get_running_loop()
        c = self._aclients.get(loop)
        if c is None:
            with self._aclients_lock:
                # A client's connections refer to its loop, so the weak key alone never
                # lets go of a loop that ended (one asyncio.run per call: a client and a
                # server connection each, for ever). Drop those, their server connections
                # shut now (their descriptors close as collected).
                for ended in [lp for lp in self._aclients if lp.is_closed()]:
                    if self._owns_clients:
                        _shut_async_client(self._aclients[ended])
                    del self._aclients[ended]
                    self._agates.pop(ended, None)
                c = self._aclients[loop] = self._aclient_factory()
        return c

    def _agate(self) -> AbstractAsyncContextManager[Any]:
        """What an async call holds while it uses a connection: nothing, except on a
        cluster client that :meth:`from_url` opened (its pools raise when full rather than
        wait, so a semaphore of ``max_connections`` per event loop makes tasks wait)."""
        if self._aclient_limit is None:
            return _NO_GATE
        loop = asyncio.get_running_loop()
        gate = self._agates.get(loop)
        if gate is None:
            with self._aclients_lock:
                gate = self._agates[loop] = asyncio.Semaphore(self._aclient_limit)
        return gate

    @property
    def _native_async(self) -> bool:
        return self._aclient is not None or self._aclient_factory is not None

    def _error(self, exc: Exception, what: str, big: _Big | None = None) -> StoreError:
        """opticmem's typed error for a redis-py exception raised during ``what``."""
        if isinstance(exc, redis.exceptions.AuthenticationError):
            return StoreUnavailableError(
                f"Redis at {self.url} refused the credentials during {what}: {exc}"
            )
        if isinstance(exc, _RETRYABLE):
            hint = "" if big is None or self._limit is not None else (
                f" (the write held a value of {big.size:,} bytes, {big.label}: if that is "
                f"more than the server's proto-max-bulk-len, which it does not let CONFIG "
                f"GET read, the server closes the connection on it)")
            return StoreUnavailableError(
                f"Redis at {self.url} is unreachable ({what} failed after "
                f"{self.retries} retries): {exc}{hint}"
            )
        if isinstance(exc, redis.exceptions.MovedError) and not self.cluster:
            return StoreError(
                f"Redis at {self.url} failed {what}: MOVED {exc} (it is a Redis Cluster: "
                "open it with cluster=True, or cluster=1 in a store URL)"
            )
        return StoreError(f"Redis at {self.url} failed {what}: {exc}")

    def _retrying(
        self, what: str, call: Callable[[], T], exc: Exception, big: _Big | None = None
    ) -> T:
        """Retry ``call`` after ``exc`` (a failed first try) with backoff; typed errors out.
        ``big``: the write's largest value, if one is over :data:`ALWAYS_FITS`: a failure
        is then first checked against the server's limit on one value (a value over it
        raises :class:`~opticmem.errors.RecordTooLargeError` at once, never retried)."""
        failures = dropped = 0
        while True:
            if big is not None and (isinstance(exc, _RETRYABLE) or _bulk_refused(exc)):
                refused, dropped = self._refused(big, exc, dropped)
                if refused is not None:
                    raise refused from exc
            if not (isinstance(exc, _RETRYABLE) and failures < self.retries):
                break
            failures += 1
            delay = self._backoff.compute(failures)
            log.info("Redis at %s: %s failed (%s); retry %d in %.2fs",
                     self.url, what, exc, failures, delay)
            time.sleep(delay)
            try:
                return call()
            except _REDIS_ERRORS as again:
                exc = again
        raise self._error(exc, what, big) from exc

    async def _aretrying(
        self, what: str, call: Callable[[], Awaitable[T]], exc: Exception,
        big: _Big | None = None,
    ) -> T:
        failures = dropped = 0
        while True:
            if big is not None and (isinstance(exc, _RETRYABLE) or _bulk_refused(exc)):
                refused, dropped = await self._arefused(big, exc, dropped)
                if refused is not None:
                    raise refused from exc
            if not (isinstance(exc, _RETRYABLE) and failures < self.retries):
                break
            failures += 1
            delay = self._backoff.compute(failures)
            log.info("Redis at %s: %s failed (%s); retry %d in %.2fs",
                     self.url, what, exc, failures, delay)
            await asyncio.sleep(delay)
            try:
                return await call()
            except _REDIS_ERRORS as again:
                exc = again
        raise self._error(exc, what, big) from exc

    # ------------------------------------------------------------------ value sizes
    # A value over the server's proto-max-bulk-len (or client-query-buffer-limit) makes it
    # close the connection, most often before its "invalid bulk length" reply can be read:
    # sent, such a write looked like a server out of reach and was retried for seconds.
    # So a write holding a value over ALWAYS_FITS (1 MB, which every server takes) is
    # checked against the limit read with CONFIG GET (once per store; again before a
    # refusal, and after a failure) and refused before anything is sent. Where CONFIG is
    # not allowed, the failure itself tells: Redis's reply when it could be read, else a
    # connection closed twice on the value while the server answered in between.
    def _note_limit(self, limit: tuple[int, str] | None) -> tuple[int, str] | None:
        self._limit, self._limit_read = limit, True
        return limit

    def _limit_unreadable(self, exc: Exception) -> None:
        if not self._limit_read:
            log.info("Redis at %s refused CONFIG GET (%s): its limit on one value "
                     "(proto-max-bulk-len) is not known; a value over it is recognised "
                     "only by how the server refuses it", self.url, exc)
        self._note_limit(None)

    def _limit_args(self) -> dict[str, Any]:
        """``CONFIG GET``'s target on a cluster: every primary (the least limit counts)."""
        return {"target_nodes": RedisCluster.PRIMARIES} if self.cluster else {}

    def _read_limit(self) -> tuple[tuple[int, str] | None, bool]:
        """The most bytes the server takes in one value and the setting that bounds it,
        read now with ``CONFIG GET`` and kept for later writes (``None`` where it cannot
        be read: ``CONFIG`` refused by an ACL or renamed, or the server out of reach); and
        whether the server answered."""
        client = self._sync()
        kw = self._limit_args()
        for _ in range(2):  # twice: the server may have closed the connection a value
            try:            # over its limit came on, and the pool hand it out again
                return self._note_limit(
                    _limit_of([client.config_get(n, **kw) for n in _LIMIT_SETTINGS])), True
            except _RETRYABLE:
                continue
            except _REDIS_ERRORS as exc:
                self._limit_unreadable(exc)
                return None, True
        return None, False

    async def _aread_limit(self) -> tuple[tuple[int, str] | None, bool]:
        client = self._async()
        kw = self._limit_args()
        for _ in range(2):  # as in _read_limit
            try:
                async with self._agate():
                    replies = [await client.config_get(n, **kw) for n in _LIMIT_SETTINGS]
                return self._note_limit(_limit_of(replies)), True
            except _RETRYABLE:
                continue
            except _REDIS_ERRORS as exc:
                self._limit_unreadable(exc)
                return None, True
        return None, False

    def _too_large(self, big: _Big, limit: tuple[int, str] | None,
                   why: str = "") -> RecordTooLargeError:
        head = (f"{big.label} is {big.size:,} bytes as stored, more than Redis at {self.url} "
                "takes in one value")
        if limit is None:
            return RecordTooLargeError(
                f"{head} ({why}; its proto-max-bulk-len cannot be read, CONFIG GET is not "
                "allowed): nothing was stored. Raise proto-max-bulk-len on the server, or "
                "store less in one piece", size=big.size)
        bound, setting = limit
        named = (f"its {setting}" if setting == "proto-max-bulk-len"
                 else f"its {setting} of {bound + 2:,}, less the 2 bytes that end a value")
        return RecordTooLargeError(
            f"{head}: {bound:,} bytes ({named}); nothing was stored. Raise {setting} on "
            f"the server (CONFIG SET {setting} ...), or store less in one piece",
            size=big.size, limit=bound, setting=setting)

    def _fits(self, big: _Big | None) -> bool:
        """Whether a write whose largest value is ``big`` may be sent (``None``: every value
        fits any server). Checked against the limit read before (read now if none was); a
        refusal is checked again against the limit read now, which may have been raised."""
        if big is None:
            return True
        limit = self._limit if self._limit_read else self._read_limit()[0]
        if limit is None or big.size <= limit[0]:
            return True
        limit = self._read_limit()[0]
        return limit is None or big.size <= limit[0]

    async def _afits(self, big: _Big | None) -> bool:
        if big is None:
            return True
        limit = self._limit if self._limit_read else (await self._aread_limit())[0]
        if limit is None or big.size <= limit[0]:
            return True
        limit = (await self._aread_limit())[0]
        return limit is None or big.size <= limit[0]

    def _fit(self, big: _Big | None) -> None:
        """Raise :class:`~opticmem.errors.RecordTooLargeError` before a write whose largest
        value is more than the server takes in one (:meth:`_fits`)."""
        if not self._fits(big):
            assert big is not None
            raise self._too_large(big, self._limit)

    async def _afit(self, big: _Big | None) -> None:
        if not await self._afits(big):
            assert big is not None
            raise self._too_large(big, self._limit)

    def _refused(self, big: _Big, exc: Exception, dropped: int) -> tuple[
            RecordTooLargeError | None, int]:
        """After a write whose largest value is ``big`` failed with ``exc``: the error to
        raise if that value is over the server's limit (read again now), else ``None``;
        and how many times in a row the server has closed the connection on the value
        while answering in between (``dropped``: as many before this failure)."""
        return self._refusal(big, exc, dropped, *self._read_limit())

    async def _arefused(self, big: _Big, exc: Exception, dropped: int) -> tuple[
            RecordTooLargeError | None, int]:
        return self._refusal(big, exc, dropped, *(await self._aread_limit()))

    def _refusal(self, big: _Big, exc: Exception, dropped: int,
                 limit: tuple[int, str] | None, answered: bool) -> tuple[
                     RecordTooLargeError | None, int]:
        if limit is not None:
            return (self._too_large(big, limit) if big.size > limit[0] else None), 0
        if _bulk_refused(exc):
            return self._too_large(big, None, "it refused it: invalid bulk length"), 0
        # A timeout is no sign: a large value may take long to send.
        if not (answered and isinstance(exc, redis.exceptions.ConnectionError)):
            return None, 0
        if dropped + 1 >= 2:
            return self._too_large(big, None, "it closed the connection on it twice, "
                                   "answering other commands in between"), 0
        return None, dropped + 1

    def _evalsha(self, lua: _Lua, keys: _Keys, args: Sequence[Any]) -> Any:
        client = self._sync()
        try:
            return client.evalsha(lua.sha, 1, keys.turns, *args)
        except NoScriptError:  # a new or restarted server: load it once
            client.script_load(lua.source)
            return client.evalsha(lua.sha, 1, keys.turns, *args)

    async def _aevalsha(self, lua: _Lua, keys: _Keys, args: Sequence[Any]) -> Any:
        client = self._async()
        async with self._agate():
            try:
                return await client.evalsha(lua.sha, 1, keys.turns, *args)
            except NoScriptError:
                await client.script_load(lua.source)
                return await client.evalsha(lua.sha, 1, keys.turns, *args)

    def _eval(self, lua: _Lua, keys: _Keys, *args: Any, big: _Big | None = None) -> Any:
        """Run an idempotent script, retrying it as is after a lost connection. ``big``:
        its largest argument, if one is over :data:`ALWAYS_FITS` (see :meth:`_fit`)."""
        self._fit(big)
        try:
            return self._evalsha(lua, keys, args)
        except _REDIS_ERRORS as exc:
            return self._retrying(lua.name, lambda: self._evalsha(lua, keys, args), exc, big)

    async def _aeval(self, lua: _Lua, keys: _Keys, *args: Any, big: _Big | None = None) -> Any:
        await self._afit(big)
        try:
            return await self._aevalsha(lua, keys, args)
        except _REDIS_ERRORS as exc:
            return await self._aretrying(
                lua.name, lambda: self._aevalsha(lua, keys, args), exc, big
            )

    def _read(self, what: str, method: str, *args: Any) -> Any:
        """Run one read command (``method`` of the client), retrying it as is."""
        try:
            return getattr(self._sync(), method)(*args)
        except _REDIS_ERRORS as exc:
            return self._retrying(what, lambda: getattr(self._sync(), method)(*args), exc)

    async def _aread_once(self, method: str, args: Sequence[Any]) -> Any:
        client = self._async()
        async with self._agate():
            return await getattr(client, method)(*args)

    async def _aread(self, what: str, method: str, *args: Any) -> Any:
        try:
            return await self._aread_once(method, args)
        except _REDIS_ERRORS as exc:
            return await self._aretrying(
                what, functools.partial(self._aread_once, method, args), exc
            )

    # ------------------------------------------------------------------ turn log
    def _push(self, keys: _Keys, recs: list[bytes]) -> Any:
        """One append attempt: a bare ``RPUSH`` unless a cap or TTL needs the script."""
        if self._scripted_appends or (keys.id_arg and self.cluster):
            # On Cluster a digest-keyed append is the script too (one atomic call on the
            # session's slot): not every redis-py version has MULTI/EXEC in cluster pipelines.
            return self._evalsha(self._append_lua, keys, (keys.id_arg, *recs))
        client = self._sync()
        if keys.id_arg:  # digest-keyed session: remember its id for sessions()
            # MULTI/EXEC: a client killed between the two would leave turns whose id
            # sessions() can never list.
            pipe = client.pipeline(transaction=True)
            pipe.rpush(keys.turns, *recs)
            pipe.hsetnx(keys.meta, "id", keys.id_arg)
            length = pipe.execute()[0]
        else:
            length = client.rpush(keys.turns, *recs)
        return (0, int(length) - len(recs))

    async def _apush(self, keys: _Keys, recs: list[bytes]) -> Any:
        if self._scripted_appends or (keys.id_arg and self.cluster):  # as in _push
            return await self._aevalsha(self._append_lua, keys, (keys.id_arg, *recs))
        client = self._async()
        async with self._agate():
            if keys.id_arg:  # MULTI/EXEC, as in _push
                pipe = client.pipeline(transaction=True)
                pipe.rpush(keys.turns, *recs)
                pipe.hsetnx(keys.meta, "id", keys.id_arg)
                length = (await pipe.execute())[0]
            else:
                length = await client.rpush(keys.turns, *recs)
        return (0, int(length) - len(recs))

    def _appended(self, keys: _Keys, items: Items, result: Any) -> list[Turn]:
        status, value = int(result[0]), int(result[1])
        if status < 0:
            raise SessionFullError(
                f"session {keys.session[:200]!r} holds {value} turns; max_turns is "
                f"{self.max_turns} and {len(items)} more were refused (nothing stored)"
            )
        if status == 1:
            log.info("%s: a retried append had been stored before its reply was lost; "
                     "kept it once (seq %d)", keys.turns, value)
        session = keys.session
        return [
            Turn(session, value + i, r, t, float(ts), dict(m) if m else {})
            for i, (r, t, ts, m) in enumerate(items)
        ]

    def append_turn(
        self, session: str, role: str, text: str, ts: float, meta: Mapping[str, Any] | None = None
    ) -> Turn:
        keys = self._keys(session)
        token = _TOKENS.next()
        rec = _record(token, role, text, ts, meta)
        big = None if len(rec) <= ALWAYS_FITS else _big([rec], _turn_label(keys, 1))
        self._fit(big)
        try:
            if self._scripted_appends or keys.id_arg:
                result = self._push(keys, [rec])
            else:  # the common case, inlined: one RPUSH
                result = (0, self._sync().rpush(keys.turns, rec) - 1)
        except _REDIS_ERRORS as exc:
            result = self._retry_append(keys, [rec], token, exc, big)
        if result[0] != 0:
            return self._appended(keys, ((role, text, ts, meta),), result)[0]
        return Turn(session, int(result[1]), role, text, float(ts), dict(meta) if meta else {})

    def append_turns(self, session: str, items: Items) -> list[Turn]:
        """Append the batch with contiguous seqs in one round trip."""
        keys = self._keys(session)
        if not items:
            return []
        recs, token = _records(items)
        big = _big(recs, _turn_label(keys, len(recs)))
        self._fit(big)
        try:
            result = self._push(keys, recs)
        except _REDIS_ERRORS as exc:
            result = self._retry_append(keys, recs, token, exc, big)
        return self._appended(keys, items, result)

    def _retry_append(
        self, keys: _Keys, recs: list[bytes], token: str, exc: Exception, big: _Big | None
    ) -> Any:
        """After a failed append: retry with the script that first looks for ``token``."""
        args = (keys.id_arg, _needle(token), *recs)
        return self._retrying(
            "append", lambda: self._evalsha(self._resolve_lua, keys, args), exc, big
        )

    def turn_count(self, session: str) -> int:
        return int(self._read("turn_count", "llen", self._keys(session).turns))

    def get_turns(self, session: str, start: int, stop: int) -> list[Turn]:
        keys = self._keys(session)
        bounds = _range(start, stop)
        if bounds is None:
            return []
        raw = self._read("get_turns", "lrange", keys.turns, *bounds)
        return _parse_turns(session, keys.turns, bounds[0], raw)

    # ------------------------------------------------------------------ page log
    def _paged(self, page: PageRecord, result: Any) -> bool:
        status, count = int(result[0]), int(result[1])
        if status == -2:
            raise PageConflictError(sealed_over_missing_turns(page, count))
        if status == -3:
            raise PageConflictError(sealed_in_another_life(page))
        if status < 0:
            raise PageConflictError(
                f"session {page.session[:200]!r}: page {page.page_no} written but the log "
                f"holds {count} pages (pages must be added in order)"
            )
        return status == 1

    def add_page(self, page: PageRecord) -> bool:
        return self._push_page(page)

    def add_sealed_page(self, page: PageRecord, *, epoch: str | None = None) -> bool:
        """See :meth:`Store.add_sealed_page`: the turn list's length and the session's
        epoch (the meta hash's ``epoch``) are checked in the script that adds the page."""
        if epoch is None:
            return self._push_page(page, page.last_seq + 1)
        return self._push_page(page, page.last_seq + 1, epoch.encode("utf-8"))

    def _push_page(self, page: PageRecord, *sealed: int | bytes) -> bool:
        """Run the add-page script; ``sealed``: the turns the turn list must hold, then
        the epoch the session must be in (both optional)."""
        keys = self._keys(page.session)
        data = page.to_json().encode("utf-8")
        return self._paged(page, self._eval(self._page_lua, keys, page.page_no, data,
                                            *sealed, big=_page_big(page, data)))

    def session_epoch(self, session: str) -> str | None:
        """See :meth:`Store.session_epoch`: the meta hash's ``epoch``, kept by a script
        the first time a session with a turn list is asked for one (so that processes
        asking at once agree, and a session stored before epochs existed gets one too);
        deleted with the meta hash when the session is deleted or expires."""
        got = self._eval(self._epoch_lua, self._keys(session), new_epoch())
        return got.decode("utf-8") if isinstance(got, bytes) else str(got)

    def page_count(self, session: str) -> int:
        return int(self._read("page_count", "llen", self._keys(session).pages))

    def get_pages(self, session: str, start: int, stop: int) -> list[PageRecord]:
        keys = self._keys(session)
        bounds = _range(start, stop)
        if bounds is None:
            return []
        raw = self._read("get_pages", "lrange", keys.pages, *bounds)
        return _parse_pages(session, keys.pages, bounds[0], raw)

    def get_pages_of(self, refs: Sequence[tuple[str, int]]) -> list[PageRecord | None]:
        """See :meth:`Store.get_pages_of`: one pipeline of ``LINDEX`` (split by node on a
        cluster)."""
        keys = [self._keys(s).pages if n >= 0 else None for s, n in refs]
        raw = iter(self._pipelined("get_pages_of", [
            ("lindex", (k, n)) for k, (_, n) in zip(keys, refs, strict=True) if k is not None]))
        out: list[PageRecord | None] = []
        for key, (session, n) in zip(keys, refs, strict=True):
            r = next(raw) if key is not None else None
            out.append(None if key is None or r is None else _parse_pages(session, key, n, [r])[0])
        return out

    def _pipelined(self, what: str, calls: Sequence[tuple[str, tuple[Any, ...]]],
                   script: _Lua | None = None, big: _Big | None = None) -> list[Any]:
        """Idempotent commands ``(method, args)`` in one non-transactional pipeline,
        retried as a whole after a lost connection; their replies. With ``script`` (run
        by ``evalsha`` in ``calls``), it is loaded once if the server lacks it."""
        if not calls:
            return []

        def once() -> list[Any]:
            client = self._sync()
            pipe = client.pipeline(transaction=False)
            try:
                for method, args in calls:
                    getattr(pipe, method)(*args)
            except redis.exceptions.RedisClusterException:
                # A cluster pipeline of redis-py before 8.2 refuses EVALSHA as it is queued
                # (nothing sent yet): put_page_blobs failed on every call. One call each.
                pipe.reset()
                return [getattr(client, method)(*args) for method, args in calls]
            return list(pipe.execute())

        def run() -> list[Any]:
            try:
                return once()
            except NoScriptError:  # a new or restarted server, as in _evalsha
                if script is None:
                    raise
                self._sync().script_load(script.source)
                return once()

        return self._read_call(what, run, big)

    # ------------------------------------------------------------------ blob cache
    def _blob(self, key: str, data: bytes) -> tuple[str, bytes]:
        if not isinstance(key, str):
            raise TypeError(f"blob key must be a str, got {type(key).__name__}")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"blob data must be bytes, got {type(data).__name__}")
        return encode_id(key, "blob key"), pack_blob(bytes(data), compress=self.compress_blobs)

    def _blob_key(self, keys: _Keys, key: str) -> str:
        if not isinstance(key, str):
            raise TypeError(f"blob key must be a str, got {type(key).__name__}")
        return keys.blob_prefix + encode_id(key, "blob key")

    def put_blob(self, session: str, key: str, data: bytes) -> None:
        """See :meth:`Store.put_blob`: a write of the session, which refreshes its expiry
        with this store's ``ttl``. A store without one gives the blob (and the session's
        blob index) what is left of the session's life when the session expires (set by
        another store's ``ttl``), as :meth:`put_page_blob` does: kept for ever, the blob
        outlived the session and came back in the next session of that id."""
        keys = self._keys(session)
        enc, packed = self._blob(key, data)
        evicted = int(self._eval(self._blob_lua, keys, enc, packed,
                                 big=_value_big("blob", key, session, packed)))
        if evicted:
            log.debug("%s: max_blob_bytes evicted %d older blobs", keys.turns, evicted)

    @staticmethod
    def _page_guard(page: PageRecord) -> tuple[int, int, int, str, str]:
        digest = hashlib.sha1(page.transcript.encode("utf-8", "surrogatepass")).hexdigest()
        return page.page_no, page.first_seq, page.first_line, page.render_key, digest

    def put_page_blob(self, page: PageRecord, key: str, data: bytes) -> bool:
        """See :meth:`Store.put_page_blob`: the page is compared and the blob written in
        one script, so no key of a deleted (or expired) session is ever written back.
        In a session that expires, the blob gets what is left of the session's life and
        the session's is not refreshed (unlike :meth:`put_blob`): a worker reading a page
        long after the bot wrote it does not keep the session alive, and its readings
        expire with the session even when this store has no ``ttl`` of its own (a
        worker opened with a URL that leaves out the bots' ``ttl``). A session without
        an expiry keeps none: this store's ``ttl`` (a worker's URL with a ``ttl`` the
        bots do not use) never sets one on it."""
        keys = self._keys(page.session)
        enc, packed = self._blob(key, data)
        result = int(self._eval(self._page_blob_lua, keys, enc, packed, *self._page_guard(page),
                                big=_value_big("blob", key, page.session, packed)))
        if result > 0:
            log.debug("%s: max_blob_bytes evicted %d older blobs", keys.turns, result)
        return result >= 0

    def put_page_blobs(self, blobs: Sequence[tuple[PageRecord, str, bytes]]) -> list[bool]:
        """See :meth:`Store.put_page_blobs`: the script of :meth:`put_page_blob` for each,
        in one pipeline. An artefact larger than the server takes in one value is not
        written (``False``, logged as a warning) and the others are: they are a cache,
        which the memory and the workers fill again from the pages, and one too large for
        the server must not keep the others out of it (nor fail the reading that made
        them). :meth:`put_page_blob` raises
        :class:`~opticmem.errors.RecordTooLargeError` instead."""
        lua = self._page_blob_lua
        calls: list[tuple[str, tuple[Any, ...]]] = []
        sent: list[int] = []
        largest: _Big | None = None
        for i, (page, key, data) in enumerate(blobs):
            enc, packed = self._blob(key, data)
            big = _value_big("blob", key, page.session, packed)
            if not self._fits(big):
                assert big is not None
                log.warning("%s; not cached", self._too_large(big, self._limit))
                continue
            if big is not None and (largest is None or big.size > largest.size):
                largest = big
            calls.append(("evalsha", (lua.sha, 1, self._keys(page.session).turns, enc,
                                      packed, *self._page_guard(page))))
            sent.append(i)
        kept = [False] * len(blobs)
        for i, r in zip(sent, self._pipelined(lua.name, calls, script=lua, big=largest),
                        strict=True):
            kept[i] = int(r) >= 0
        return kept

    def get_blob(self, session: str, key: str) -> bytes | None:
        bk = self._blob_key(self._keys(session), key)
        stored = self._read("get_blob", "get", bk)
        return None if stored is None else unpack_blob(stored, bk)

    def get_blobs(self, session: str, keys_: Sequence[str]) -> list[bytes | None]:
        """Several blobs in one ``MGET`` (the keys share a slot, so this works on Cluster)."""
        keys = self._keys(session)
        bks = [self._blob_key(keys, k) for k in keys_]
        if not bks:
            return []
        return _unpack_all(bks, self._read("get_blobs", "mget", bks))

    def get_blobs_of(self, refs: Sequence[tuple[str, str]]) -> list[bytes | None]:
        """See :meth:`Store.get_blobs_of`: a ``GET`` per blob, all in one pipeline (a
        cluster pipeline refuses ``MGET`` and splits GETs by node)."""
        bks = [self._blob_key(self._keys(s), k) for s, k in refs]
        return _unpack_all(bks, self._pipelined("get_blobs_of", [("get", (k,)) for k in bks]))

    # ------------------------------------------------------------------ session state
    @staticmethod
    def _state(key: str, data: bytes | None = None) -> tuple[bytes, bytes]:
        if not isinstance(key, str):
            raise TypeError(f"state key must be a str, got {type(key).__name__}")
        if data is not None and not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"state data must be bytes, got {type(data).__name__}")
        return key.encode("utf-8", "surrogatepass"), bytes(data or b"")

    def put_state(self, session: str, key: str, data: bytes) -> None:
        """Kept in the session's meta hash: blob caps and TTL sweeps never evict it."""
        field, value = self._state(key, data)
        self._eval(self._state_lua, self._keys(session), field, value,
                   big=_value_big("state", key, session, value))

    def get_state(self, session: str, key: str) -> bytes | None:
        field = b"state:" + self._state(key)[0]
        stored = self._read("get_state", "hget", self._keys(session).meta, field)
        return None if stored is None else bytes(stored)

    def _swap(
        self, key: str, expected: bytes | None, data: bytes, page: PageRecord | None
    ) -> tuple[Any, ...]:
        """The arguments of the ``swap_state`` script."""
        if expected is not None and not isinstance(expected, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected state must be bytes or None, got "
                            f"{type(expected).__name__}")
        field, value = self._state(key, data)
        guard = () if page is None else self._page_guard(page)
        return (field, b"0" if expected is None else b"1", bytes(expected or b""), value,
                *guard)

    def swap_state(
        self, session: str, key: str, expected: bytes | None, data: bytes, *,
        page: PageRecord | None = None,
    ) -> bool:
        """See :meth:`Store.swap_state`: the page and the value are compared and the value
        written in one script, so no other client's write or delete slips in between; a
        write refreshes the session's TTL as :meth:`put_state` does. A swap retried after
        a lost connection whose first try the server had applied reports ``False``: read
        the value again to know (what a loser does anyway)."""
        args = self._swap(key, expected, data, page)
        return int(self._eval(self._swap_lua, self._keys(session), *args,
                              big=_value_big("state", key, session, args[2], args[3]))) == 1

    # ------------------------------------------------------------------ sessions
    def _scan_pattern(self) -> str:
        return f"opticmem:{{{self._tenant_enc}:*}}:turns"

    def _meta_key(self, enc: str) -> str:
        return f"opticmem:{{{self._tenant_enc}:{enc}}}:meta"

    def _sessions_in(
        self, keys: Sequence[bytes], seen: set[str]
    ) -> tuple[list[str], list[str]]:
        """Session ids named by one SCAN batch: ``(direct ids, digests to look up)``."""
        head, tail = f"opticmem:{{{self._tenant_enc}:".encode(), b"}:turns"
        direct, digests = [], []
        for key in keys:
            if not (key.startswith(head) and key.endswith(tail)):
                continue
            enc = key[len(head) : len(key) - len(tail)].decode("ascii", "replace")
            if enc in seen:
                continue
            seen.add(enc)
            if _DIGEST_RE.fullmatch(enc):
                digests.append(enc)
                continue
            session = decode_direct_id(enc)
            if session is None:
                log.debug("skipped a key that opticmem did not write: %r", key)
            else:
                direct.append(session)
        return direct, digests

    @staticmethod
    def _resolve_digests(digests: Sequence[str], stored: Sequence[Any]) -> list[str]:
        out = []
        for enc, raw in zip(digests, stored, strict=True):
            session = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else None
            if session is None or encode_id(session) != enc:
                log.warning("session key %s has no matching id in its meta hash; skipped", enc)
                continue
            out.append(session)
        return out

    @staticmethod
    def _scanned(node: Any, reply: Any) -> tuple[int, Sequence[bytes]]:
        """``(next cursor, keys)`` from a SCAN reply; on a cluster client the reply holds
        a cursor per node (``({name: cursor}, keys)``) and ``node`` is the node scanned."""
        cursor, batch = reply
        return int(cursor[node.name] if node is not None else cursor), batch

    def _primaries(self) -> list[Any]:
        client = self._sync()
        assert isinstance(client, RedisCluster)
        return list(client.get_primaries())

    def _scan(self, node: Any, cursor: int, pattern: str) -> tuple[int, Sequence[bytes]]:
        client = self._sync()
        if node is None:
            return self._scanned(None, client.scan(cursor, pattern, 1000))
        return self._scanned(node, client.scan(cursor, pattern, 1000, target_nodes=node))

    def sessions(self) -> Iterator[str]:
        """Session ids of this tenant with at least one turn, found with ``SCAN``.

        Digest-keyed (very long) ids are read from their meta hashes, one round trip per
        SCAN batch. A lost connection is retried from the same cursor. On Redis Cluster
        every primary is scanned in turn (a session lives on one of them); a failover or
        resharding while it lists may make it miss a session or fail with
        :class:`~opticmem.errors.StoreUnavailableError` (list again).
        """
        seen: set[str] = set()
        pattern = self._scan_pattern()
        nodes = self._read_call("sessions", self._primaries) if self.cluster else [None]
        for node in nodes:
            cursor = 0
            while True:
                cursor, batch = self._read_call(
                    "sessions", functools.partial(self._scan, node, cursor, pattern)
                )
                direct, digests = self._sessions_in(batch, seen)
                yield from direct
                if digests:
                    stored = self._pipelined(
                        "sessions", [("hget", (self._meta_key(enc), "id")) for enc in digests]
                    )
                    yield from self._resolve_digests(digests, stored)
                if cursor == 0:
                    break

    def _read_call(self, what: str, call: Callable[[], T], big: _Big | None = None) -> T:
        try:
            return call()
        except _REDIS_ERRORS as exc:
            return self._retrying(what, call, exc, big)

    def delete_session(self, session: str) -> None:
        self._eval(self._delete_lua, self._keys(session))

    def forget_turns(self, session: str, before_seq: int) -> int:
        """See :meth:`Store.forget_turns`. If a lost reply forces a retry, the retry
        forgets nothing more and may report fewer turns than were dropped."""
        return int(self._eval(self._forget_lua, self._keys(session), int(before_seq)))

    def close(self) -> None:
        """Close the clients this store opened (clients passed in are left open). A call
        another thread is making finishes first (its write is kept and reported), and its
        connection closes after it.

        The async clients opened per event loop are released too, without a loop of the
        caller's: a running loop's (in another thread, or this one's, when sync code
        inside a coroutine calls this) is closed on that loop as soon as it gets to it;
        a loop that is not running cannot close its client, so its connections' sockets
        are shut — the server drops them at once, the descriptors close as the client is
        collected. Only ``await aclose()`` closes the current loop's client completely
        before returning. A forked child leaves its parent's clients alone (their sockets
        are the parent's)."""
        if self._closed:
            return
        self._closed = True
        if self._owns_clients and self._client is not None:
            pool = getattr(self._client, "connection_pool", None)
            if isinstance(pool, _ClosingPool):  # calls of other threads finish first
                pool.close_idle()
            else:
                self._client.close()
        with self._aclients_lock:
            clients = list(self._aclients.items())
            self._aclients = weakref.WeakKeyDictionary()
        if self._owns_clients and self._aclients_pid == os.getpid():
            for loop, client in clients:
                _release_async_client(loop, client)

    # ------------------------------------------------------------------ async twins
    async def aappend_turn(
        self, session: str, role: str, text: str, ts: float, meta: Mapping[str, Any] | None = None
    ) -> Turn:
        return (await self.aappend_turns(session, ((role, text, ts, meta),)))[0]

    async def aappend_turns(self, session: str, items: Items) -> list[Turn]:
        if not self._native_async:
            return await super().aappend_turns(session, items)
        keys = self._keys(session)
        if not items:
            return []
        recs, token = _records(items)
        big = _big(recs, _turn_label(keys, len(recs)))
        await self._afit(big)
        try:
            result = await self._apush(keys, recs)
        except _REDIS_ERRORS as exc:
            args = (keys.id_arg, _needle(token), *recs)
            result = await self._aretrying(
                "append", lambda: self._aevalsha(self._resolve_lua, keys, args), exc, big
            )
        return self._appended(keys, items, result)

    async def aturn_count(self, session: str) -> int:
        if not self._native_async:
            return await super().aturn_count(session)
        return int(await self._aread("turn_count", "llen", self._keys(session).turns))

    async def aget_turns(self, session: str, start: int, stop: int) -> list[Turn]:
        if not self._native_async:
            return await super().aget_turns(session, start, stop)
        keys = self._keys(session)
        bounds = _range(start, stop)
        if bounds is None:
            return []
        raw = await self._aread("get_turns", "lrange", keys.turns, *bounds)
        return _parse_turns(session, keys.turns, bounds[0], raw)

    async def aadd_page(self, page: PageRecord) -> bool:
        if not self._native_async:
            return await super().aadd_page(page)
        keys = self._keys(page.session)
        data = page.to_json().encode("utf-8")
        return self._paged(page, await self._aeval(self._page_lua, keys, page.page_no, data,
                                                   big=_page_big(page, data)))

    async def apage_count(self, session: str) -> int:
        if not self._native_async:
            return await super().apage_count(session)
        return int(await self._aread("page_count", "llen", self._keys(session).pages))

    async def aget_pages(self, session: str, start: int, stop: int) -> list[PageRecord]:
        if not self._native_async:
            return await super().aget_pages(session, start, stop)
        keys = self._keys(session)
        bounds = _range(start, stop)
        if bounds is None:
            return []
        raw = await self._aread("get_pages", "lrange", keys.pages, *bounds)
        return _parse_pages(session, keys.pages, bounds[0], raw)

    async def aput_blob(self, session: str, key: str, data: bytes) -> None:
        if not self._native_async:
            return await super().aput_blob(session, key, data)
        keys = self._keys(session)
        enc, packed = self._blob(key, data)
        evicted = int(await self._aeval(self._blob_lua, keys, enc, packed,
                                        big=_value_big("blob", key, session, packed)))
        if evicted:
            log.debug("%s: max_blob_bytes evicted %d older blobs", keys.turns, evicted)

    async def aput_page_blob(self, page: PageRecord, key: str, data: bytes) -> bool:
        if not self._native_async:
            return await super().aput_page_blob(page, key, data)
        keys = self._keys(page.session)
        enc, packed = self._blob(key, data)
        result = int(await self._aeval(self._page_blob_lua, keys, enc, packed,
                                       *self._page_guard(page),
                                       big=_value_big("blob", key, page.session, packed)))
        if result > 0:
            log.debug("%s: max_blob_bytes evicted %d older blobs", keys.turns, result)
        return result >= 0

    async def aget_blob(self, session: str, key: str) -> bytes | None:
        if not self._native_async:
            return await super().aget_blob(session, key)
        bk = self._blob_key(self._keys(session), key)
        stored = await self._aread("get_blob", "get", bk)
        return None if stored is None else unpack_blob(stored, bk)

    async def aget_blobs(self, session: str, keys_: Sequence[str]) -> list[bytes | None]:
        if not self._native_async:
            return await super().aget_blobs(session, keys_)
        keys = self._keys(session)
        bks = [self._blob_key(keys, k) for k in keys_]
        if not bks:
            return []
        return _unpack_all(bks, await self._aread("get_blobs", "mget", bks))

    async def aput_state(self, session: str, key: str, data: bytes) -> None:
        if not self._native_async:
            return await super().aput_state(session, key, data)
        field, value = self._state(key, data)
        await self._aeval(self._state_lua, self._keys(session), field, value,
                          big=_value_big("state", key, session, value))

    async def aget_state(self, session: str, key: str) -> bytes | None:
        if not self._native_async:
            return await super().aget_state(session, key)
        field = b"state:" + self._state(key)[0]
        stored = await self._aread("get_state", "hget", self._keys(session).meta, field)
        return None if stored is None else bytes(stored)

    async def aswap_state(
        self, session: str, key: str, expected: bytes | None, data: bytes, *,
        page: PageRecord | None = None,
    ) -> bool:
        if not self._native_async:
            return await super().aswap_state(session, key, expected, data, page=page)
        args = self._swap(key, expected, data, page)
        big = _value_big("state", key, session, args[2], args[3])
        return int(await self._aeval(self._swap_lua, self._keys(session), *args, big=big)) == 1

    async def _ahget_ids(self, digests: Sequence[str]) -> list[Any]:
        pipe = self._async().pipeline(transaction=False)
        for enc in digests:
            pipe.hget(self._meta_key(enc), "id")
        async with self._agate():
            return list(await pipe.execute())

    async def _ascan(self, node: Any, cursor: int, pattern: str) -> tuple[int, Sequence[bytes]]:
        client = self._async()
        async with self._agate():
            if node is None:
                return self._scanned(None, await client.scan(cursor, pattern, 1000))
            return self._scanned(
                node, await client.scan(cursor, pattern, 1000, target_nodes=node)
            )

    async def _aprimaries(self) -> list[Any]:
        client = self._async()
        assert isinstance(client, AsyncRedisCluster)
        async with self._agate():
            await client.initialize()  # at once if it already is
        return list(client.get_primaries())

    async def _aread_call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except _REDIS_ERRORS as exc:
            return await self._aretrying(what, call, exc)

    async def asessions(self) -> list[str]:
        if not self._native_async:
            return await super().asessions()
        seen: set[str] = set()
        out: list[str] = []
        pattern = self._scan_pattern()
        nodes = await self._aread_call("sessions", self._aprimaries) if self.cluster else [None]
        for node in nodes:
            cursor = 0
            while True:
                cursor, batch = await self._aread_call(
                    "sessions", functools.partial(self._ascan, node, cursor, pattern)
                )
                direct, digests = self._sessions_in(batch, seen)
                out += direct
                if digests:
                    stored = await self._aread_call(
                        "sessions", functools.partial(self._ahget_ids, digests)
                    )
                    out += self._resolve_digests(digests, stored)
                if cursor == 0:
                    break
        return out

    async def adelete_session(self, session: str) -> None:
        if not self._native_async:
            return await super().adelete_session(session)
        await self._aeval(self._delete_lua, self._keys(session))

    async def aforget_turns(self, session: str, before_seq: int) -> int:
        if not self._native_async:
            return await super().aforget_turns(session, before_seq)
        return int(await self._aeval(self._forget_lua, self._keys(session), int(before_seq)))

    async def aclose(self) -> None:
        """Close the clients this store opened, the current event loop's async one too
        (awaited here; those of other loops as :meth:`close` releases them)."""
        if self._closed:
            return
        if self._owns_clients:
            with self._aclients_lock:
                c = self._aclients.pop(asyncio.get_running_loop(), None)
            if c is not None:
                await c.aclose()
        self.close()


_closing_clients: set[concurrent.futures.Future[Any]] = set()
"""Closes :func:`_release_async_client` scheduled on running loops, kept until done (a
loop keeps only a weak reference to its tasks)."""


def _release_async_client(loop: asyncio.AbstractEventLoop, client: Any) -> None:
    """Release an async client a store opened for ``loop``: closed on that loop when it
    runs (``aclose`` scheduled from any thread), its sockets shut now when it does not
    (:func:`_shut_async_client`): a loop that ended, or one not running now, whose client
    only it can close. Called from :meth:`RedisStore.close`."""
    if loop.is_running() and not loop.is_closed():
        try:
            done = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
        except RuntimeError:  # the loop closed meanwhile
            _shut_async_client(client)
            return
        _closing_clients.add(done)
        done.add_done_callback(_closing_clients.discard)
        return
    _shut_async_client(client)


def _check_server(url: str, safe: str, common: dict[str, Any], uses_ttl: bool) -> None:
    """Ping once without retries; log persistence or eviction settings that risk turns.

    INFO serves only those warnings: a server that refuses it (an ACL user without
    ``@dangerous``, where INFO belongs; a renamed command) is used all the same."""
    probe = None
    info: Mapping[str, Any] | None = None
    try:
        probe = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **common)
        probe.ping()
        try:
            info = probe.info()
        except redis.exceptions.ResponseError as exc:
            _info_refused(safe, exc)
    except ValueError as exc:
        raise StoreError(f"bad Redis URL {safe}: {exc}") from exc
    except redis.exceptions.AuthenticationError as exc:
        raise StoreUnavailableError(f"Redis at {safe} refused the credentials: {exc}") from exc
    except _RETRYABLE as exc:
        raise StoreUnavailableError(f"cannot reach Redis at {safe}: {exc}") from exc
    except redis.exceptions.ResponseError as exc:
        if "DB index is out of range" in str(exc):  # how many there are is the server's
            db = redis.connection.parse_url(url).get("db", 0)
            raise StoreURLError(
                f"bad db={db} in Redis URL {safe}: the server has no such database; db "
                "takes 0 up to its 'databases' setting less one (0-15 by default)") from None
        raise StoreUnavailableError(f"Redis at {safe} did not answer PING/INFO: {exc}") from exc
    except _REDIS_ERRORS as exc:
        raise StoreUnavailableError(f"Redis at {safe} did not answer PING/INFO: {exc}") from exc
    finally:
        if probe is not None:
            probe.close()
    if info is None:
        return
    _warn_risks(safe, info, uses_ttl)
    if str(info.get("cluster_enabled", "0")) == "1":
        log.warning(
            "Redis at %s is a Redis Cluster node: open it with cluster=True (cluster=1 in a "
            "store URL), or sessions whose slots live on other nodes fail with MOVED", safe
        )


def _check_cluster(client: RedisCluster, safe: str, uses_ttl: bool) -> None:
    """:func:`_check_server` for a cluster: every primary's settings, read with INFO
    (a cluster that refuses INFO is used all the same, as one server is)."""
    try:
        infos = client.info(target_nodes=RedisCluster.PRIMARIES)
    except redis.exceptions.AuthenticationError as exc:
        raise StoreUnavailableError(
            f"Redis Cluster at {safe} refused the credentials: {exc}"
        ) from exc
    except redis.exceptions.ResponseError as exc:
        _info_refused(safe, exc)
        return
    except _REDIS_ERRORS as exc:
        raise StoreUnavailableError(f"Redis Cluster at {safe} did not answer INFO: {exc}") from exc
    if not all(isinstance(i, dict) for i in infos.values()):
        infos = {safe: infos}  # one primary: some redis-py versions give its reply alone
    for node, info in sorted(infos.items()):
        _warn_risks(f"{safe} (node {node})", info, uses_ttl)


def _info_refused(where: str, exc: Exception) -> None:
    log.warning(
        "Redis at %s refused INFO (%s): its persistence and eviction settings were not "
        "checked (use appendonly yes and maxmemory-policy noeviction)", where, exc
    )


def _warn_risks(where: str, info: Mapping[str, Any], uses_ttl: bool) -> None:
    """Log the server settings (from INFO) that put acknowledged turns at risk."""
    version = str(info.get("redis_version", "0"))
    if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 7:
        log.warning("Redis at %s is version %s; opticmem is tested with Redis 7", where, version)
    if not info.get("aof_enabled"):
        log.warning(
            "Redis at %s has AOF off: acknowledged turns survive a restart only as of the "
            "last RDB snapshot (use appendonly yes with appendfsync always or everysec)", where
        )
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if policy.startswith("allkeys") or (uses_ttl and policy.startswith("volatile")):
        log.warning(
            "Redis at %s has maxmemory-policy %s: it may evict archived turns under memory "
            "pressure (use noeviction)", where, policy
        )
