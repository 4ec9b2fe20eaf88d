"""A Redis Stream of pages waiting to be read back: bots put pages in, GPU workers read them.

A memory made with ``recollect="queue"`` (on a :class:`~opticmem.redis_store.RedisStore`)
does not read its pages itself: each page it seals that the decay policy shows at Large,
and each page that reaches a new tier in a context, goes onto this queue, and workers
(``opticmem worker``, :mod:`opticmem.recollect_worker`) on machines with a GPU take pages
off it in batches across sessions, read them, and write the recollections into the same
store, where every bot process finds them. A bot then needs no model of its own for pages
the workers read.

Layout: one stream per tenant, ``opticmem:{T}:recollect``, read by the consumer group
:data:`GROUP`, and a dead-letter stream ``opticmem:{T}:recollect:dead`` for pages a worker
gave up on (:meth:`RedisRecollectQueue.dead`). Both share the hash tag ``{T}``, so Redis
Cluster keeps them in one slot, apart from every session's keys (``{T:S}``).
A worker acknowledges and deletes each entry it is done with, so the stream holds only
pages not yet read: its length is the backlog, and the memory knows a page it queued has
been dealt with when the entry is gone (:meth:`RedisRecollectQueue.unfinished`).

An entry names the page, not its pixels: session, page number and identity (its cache
id and a digest of its transcript, so a session deleted and begun again never has its new
page 0 confused with the old one), tier, the codec the memory reads with (``""``: any)
and the render settings it was packed with. Fields are UTF-8 and JSON; nothing is pickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from opticmem.artefacts import Job, page_id
from opticmem.errors import CorruptRecordError, StoreError, StoreUnavailableError, StoreURLError
from opticmem.records import PageRecord
from opticmem.redis_store import (
    REDIS_ERRORS,
    RETRYABLE_ERRORS,
    RedisStore,
    encode_id,
    redact_url,
    socket_timeout,
)
from opticmem.render import RenderSettings, Tier
from opticmem.sessions import validate_session

if TYPE_CHECKING:
    import redis
    from redis.cluster import RedisCluster

log = logging.getLogger(__name__)

GROUP = "opticmem-recollect"
"""The consumer group every worker reads the queue with."""

MAX_PAGE_NO = 2**63
"""Page numbers of queue entries are below this: Redis refuses a list index past it."""

DEAD_MAXLEN = 10_000
"""The dead-letter stream keeps about this many of the newest entries."""


def stream_key(tenant: str) -> str:
    """The tenant's queue: ``opticmem:{T}:recollect`` (``T`` escaped as session ids are)."""
    return f"opticmem:{{{encode_id(tenant, 'tenant')}}}:recollect"


def transcript_digest(page: PageRecord) -> str:
    """A short digest of what the page shows: part of its identity in a queue entry."""
    return hashlib.sha256(page.transcript.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class QueuedPage:
    """One queue entry: a page of a session to read at a tier."""

    session: str
    page_no: int
    page_id: str
    digest: str
    tier: Tier
    codec: str
    settings: RenderSettings
    queued_at: float

    def matches(self, page: PageRecord) -> bool:
        """True if ``page`` (read from the store now) is the page this entry was made for."""
        return (page.page_no == self.page_no and page_id(page) == self.page_id
                and transcript_digest(page) == self.digest)

    def to_fields(self) -> dict[str, str]:
        return {
            "session": self.session, "page": str(self.page_no), "id": self.page_id,
            "digest": self.digest, "tier": self.tier.value, "codec": self.codec,
            "settings": json.dumps(asdict(self.settings), separators=(",", ":")),
            "at": f"{self.queued_at:.3f}",
        }

    @classmethod
    def of(cls, session: str, job: Job, codec: str, settings: RenderSettings,
           now: float) -> QueuedPage:
        return cls(session, job.page.page_no, page_id(job.page), transcript_digest(job.page),
                   job.tier, codec, settings, now)

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes], entry: str) -> QueuedPage:
        """Parse an entry read from the stream; :class:`CorruptRecordError` naming it if
        it is not one this module wrote — a session id the memory refuses or a page
        number past Redis's list indexes too: looked up, such an entry failed the page
        lookup of its whole batch (every entry beside it delivered again and again, then
        buried with it)."""
        try:
            f = {k.decode("utf-8"): v.decode("utf-8") for k, v in fields.items()}
            raw = json.loads(f["settings"])
            if not isinstance(raw, dict):
                raise TypeError("settings is not an object")
            raw["labels"] = tuple(tuple(pair) for pair in raw.get("labels", ()))
            page_no = int(f["page"])
            if not 0 <= page_no < MAX_PAGE_NO:
                raise ValueError(f"page number {page_no}")
            return cls(
                session=validate_session(f["session"]), page_no=page_no, page_id=f["id"],
                digest=f["digest"], tier=Tier.parse(f["tier"]), codec=f["codec"],
                settings=RenderSettings(**raw), queued_at=float(f["at"]),
            )
        except (KeyError, ValueError, TypeError, UnicodeDecodeError, AttributeError) as exc:
            raise CorruptRecordError(f"unreadable recollection queue entry {entry}: "
                                     f"{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class DeadPage:
    """An entry a worker gave up on, and why."""

    entry: str
    """Its id in the dead-letter stream."""
    fields: dict[str, str]
    """The queue entry as it was (see :meth:`QueuedPage.to_fields`)."""
    reason: str
    deliveries: int


@dataclass(frozen=True, slots=True)
class QueueStats:
    """The queue's state: entries waiting (not yet given to a worker), taken (given to a
    worker, not yet done), dead letters, and the workers in the group."""

    waiting: int
    taken: int
    dead: int
    consumers: int
    """Workers in the group: running, or stopped while holding entries (a worker that
    stops cleanly leaves it: :meth:`RedisRecollectQueue.leave`)."""

    @property
    def backlog(self) -> int:
        return self.waiting + self.taken


_LUA_LEAVE = r"""
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def group_is_gone(exc: StoreError) -> bool:
    """True if ``exc`` is Redis saying the queue's stream or consumer group is missing
    (``NOGROUP``): the stream was deleted, or a Redis without persistence restarted."""
    import redis

    cause = exc.__cause__
    return isinstance(cause, redis.exceptions.ResponseError) and "NOGROUP" in str(cause)


class RedisRecollectQueue:
    """The recollection queue of one tenant on a Redis server (see the module docstring).

    Build it on a store's server with :meth:`for_store`, or from a client you hold (a
    Redis Cluster client too), or from a URL with :meth:`from_url`. The client must use
    ``decode_responses=False``.

    :meth:`close` (or leaving a ``with`` block) closes what the queue opened itself (the
    connections of :meth:`from_url`); a store or client it was given is the caller's to
    close, as a store leaves clients passed in open. A closed queue raises
    :class:`~opticmem.errors.StoreError` on every use.
    """

    def __init__(self, client: redis.Redis | RedisCluster, *, tenant: str = "default",
                 where: str | None = None) -> None:
        self._client: Any = client
        self._store: RedisStore | None = None
        """The store whose client this is (:meth:`for_store`, :meth:`from_url`): closed, it
        closes the queue too (its pool would otherwise open connections again)."""
        self._owns_store = False
        """Whether :meth:`close` closes :attr:`_store` (:meth:`from_url` opened it)."""
        self._closed = False
        self.tenant = tenant
        self.key = stream_key(tenant)
        self.dead_key = f"{self.key}:dead"
        self.where = where or "Redis"
        """Where the server is, for messages (no password)."""

    @classmethod
    def for_store(cls, store: RedisStore) -> RedisRecollectQueue:
        """The queue of ``store``'s tenant, on its server, through its sync client (the
        store's to close: once it is closed, so is the queue)."""
        queue = cls(store._sync(), tenant=store.tenant, where=store.url)
        queue._store = store
        return queue

    @classmethod
    def from_url(cls, url: str, *, tenant: str | None = None) -> RedisRecollectQueue:
        """The queue on the Redis server at ``url``: a plain Redis URL, or the bots' store
        URL (``redis://…?tenant=acme&ttl=86400``, ``?cluster=1``), opened as
        :meth:`RedisStore.from_store_url <opticmem.redis_store.RedisStore.from_store_url>`
        opens it. ``tenant`` defaults to the URL's ``?tenant=`` (else ``"default"``); one
        that differs from it raises :class:`~opticmem.errors.StoreURLError`, as a bad URL
        does. The queue owns the connections it opens: close it (:meth:`close`, or
        ``with RedisRecollectQueue.from_url(url) as queue:``)."""
        store = RedisStore.from_store_url(url)
        named = any(k == "tenant" for k, _ in parse_qsl(urlsplit(url).query))
        if tenant is not None and named and tenant != store.tenant:
            store.close()
            raise StoreURLError(f"tenant {tenant!r} conflicts with ?tenant={store.tenant} in "
                                f"{redact_url(url)}: give the tenant once")
        queue = cls(store._sync(), tenant=store.tenant if tenant is None else tenant,
                    where=store.url)
        queue._store, queue._owns_store = store, True
        return queue

    @property
    def client(self) -> Any:
        """The redis-py client the queue talks through (:class:`~opticmem.errors.StoreError`
        once the queue is closed). redis-py types stream replies as sync-or-async unions:
        kept as ``Any`` here and parsed field by field where read."""
        if self.closed:
            raise StoreError(f"recollection queue {self.key} at {self.where} is closed")
        return self._client

    @property
    def closed(self) -> bool:
        """Whether the queue (or the store it runs on) was closed."""
        return self._closed or (self._store is not None and self._store._closed)

    def close(self) -> None:
        """Close the connections the queue opened (:meth:`from_url`'s); a store or client
        it was given stays open. A call another thread is making finishes first. The
        queue is unusable afterwards; closing it again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._owns_store and self._store is not None:
            self._store.close()

    def __enter__(self) -> RedisRecollectQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def longest_block(self, seconds: float) -> float:
        """``seconds``, or less: how long a blocking read may wait for new entries on this
        queue's client. A wait as long as the client's ``socket_timeout`` would end in a
        timeout error, not in an empty reply; so it is held to half of it."""
        timeout = socket_timeout(self.client)
        return seconds if timeout is None else min(seconds, timeout / 2)

    def _fail(self, what: str, exc: Exception) -> StoreError:
        kind = StoreUnavailableError if isinstance(exc, RETRYABLE_ERRORS) else StoreError
        return kind(f"recollection queue {self.key} at {self.where}: {what} failed: {exc}")

    @contextlib.contextmanager
    def failing_as(self, what: str) -> Iterator[None]:
        """Turn redis-py's errors (a cluster client's own ones too) raised inside into a
        :class:`~opticmem.errors.StoreError` naming the queue and ``what`` it was doing —
        :class:`~opticmem.errors.StoreUnavailableError` where the server could not be
        reached, so that callers may try again."""
        try:
            yield
        except REDIS_ERRORS as exc:
            raise self._fail(what, exc) from exc

    # ------------------------------------------------------------------ producing
    def submit(
        self, session: str, jobs: Sequence[Job], *, codec: str, settings: RenderSettings
    ) -> list[str]:
        """Queue ``jobs`` of ``session`` (one round trip); the entries' ids.

        ``codec`` names the codec whose recollections the memory will look for (``""``:
        whatever the worker reads with)."""
        if not jobs:
            return []
        now = time.time()
        with self.failing_as("queueing pages"):
            pipe = self.client.pipeline(transaction=False)
            for job in jobs:
                pipe.xadd(self.key, QueuedPage.of(session, job, codec, settings, now).to_fields())
            return [_text(i) for i in pipe.execute()]

    def unfinished(self, entries: Sequence[str]) -> set[str]:
        """Those of ``entries`` still in the queue (not yet read, nor given up on)."""
        if not entries:
            return set()
        with self.failing_as("looking up queued pages"):
            pipe = self.client.pipeline(transaction=False)
            for e in entries:
                pipe.xrange(self.key, e, e, count=1)
            found = pipe.execute()
        return {e for e, hit in zip(entries, found, strict=True) if hit}

    # ------------------------------------------------------------------ consuming
    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if absent; entries queued before
        the first worker started are read too."""
        import redis

        with self.failing_as("creating the consumer group"):
            try:
                self.client.xgroup_create(self.key, GROUP, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def leave(self, consumer: str) -> bool:
        """Take ``consumer`` out of the group if it holds no entries (``True``): a worker
        that stops cleanly. One that holds entries stays, so that they can be claimed
        from it (deleting a consumer drops its pending entries from the group for
        good). Checked and done in one script: nothing can be taken in between."""
        with self.failing_as("leaving the consumer group"):
            return bool(self.client.eval(_LUA_LEAVE, 1, self.key, GROUP, consumer))

    def prune(self, idle: float, *, keep: str | None = None) -> list[str]:
        """Take out of the group the workers that hold no entries and have not been
        heard from for ``idle`` seconds (their entries, if they held any, were claimed
        by others): a worker that was killed stays listed otherwise. Each is checked
        and taken out in one script, as :meth:`leave` does; a live worker wrongly
        judged idle is listed again the next time it reads. ``keep``: never this one.
        The names taken out."""
        with self.failing_as("listing the workers in the group"):
            if not self.client.exists(self.key):
                return []
            listed = self.client.xinfo_consumers(self.key, GROUP)
        gone = []
        for c in listed:
            name = _text(c.get("name", c.get(b"name", b"")))
            pending = int(c.get("pending", c.get(b"pending", 0)))
            idle_ms = int(c.get("idle", c.get(b"idle", 0)))
            if name != keep and pending == 0 and idle_ms >= idle * 1000 and self.leave(name):
                gone.append(name)
        return gone

    def done(self, entries: Sequence[str]) -> None:
        """Acknowledge and delete ``entries`` in one transaction."""
        if not entries:
            return
        with self.failing_as("acknowledging entries"):
            pipe = self.client.pipeline(transaction=True)
            pipe.xack(self.key, GROUP, *entries)
            pipe.xdel(self.key, *entries)
            pipe.execute()

    def bury(self, entry: str, fields: Mapping[bytes, bytes], reason: str,
             deliveries: int) -> None:
        """Move ``entry`` to the dead-letter stream with ``reason``, and off the queue."""
        # Field names stay bytes: an entry opticmem did not write may hold any bytes.
        dead = {k: v for k, v in fields.items()
                if k not in (b"reason", b"entry", b"deliveries")}
        dead.update({b"reason": reason[:2000].encode("utf-8", "replace"),
                     b"entry": entry.encode(), b"deliveries": str(deliveries).encode()})
        with self.failing_as("moving an entry to the dead letters"):
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(self.dead_key, dead, maxlen=DEAD_MAXLEN, approximate=True)
            pipe.xack(self.key, GROUP, entry)
            pipe.xdel(self.key, entry)
            pipe.execute()
        log.warning("gave up on recollection queue entry %s after %d deliveries: %s",
                    entry, deliveries, reason)

    # ------------------------------------------------------------------ looking
    def stats(self) -> QueueStats:
        """How many entries wait, are taken, and are dead; how many workers are in the
        group."""
        with self.failing_as("reading its state"):
            length = int(self.client.xlen(self.key))
            dead = int(self.client.xlen(self.dead_key))
            groups = self.client.xinfo_groups(self.key) if self.client.exists(self.key) else []
        taken = consumers = 0
        for g in groups:
            if _text(g.get("name", g.get(b"name", b""))) == GROUP:
                taken = int(g.get("pending", g.get(b"pending", 0)))
                consumers = int(g.get("consumers", g.get(b"consumers", 0)))
        # An entry deleted while a worker held it still counts as pending: never below 0.
        return QueueStats(waiting=max(0, length - taken), taken=taken, dead=dead,
                          consumers=consumers)

    def dead(self, count: int = 100) -> list[DeadPage]:
        """The newest ``count`` dead letters, newest first."""
        out = []
        with self.failing_as("reading the dead letters"):
            letters = self.client.xrevrange(self.dead_key, count=count)
        for entry, fields in letters:
            f = {_text(k): _text(v) for k, v in fields.items()}
            reason = f.pop("reason", "")
            f.pop("entry", None)
            try:
                deliveries = int(f.pop("deliveries", "0"))
            except ValueError:
                deliveries = 0
            out.append(DeadPage(_text(entry), f, reason, deliveries))
        return out
