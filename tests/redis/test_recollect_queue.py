"""Bots queue pages on a Redis Stream, workers read them back (``recollect="queue"``).

Everything talks to the real ``redis-server`` the fixtures start. The codec is a fast
stand-in that reads a page back as a digest of its pixels: page-specific and
deterministic, so a test can tell whether a worker read the right page of the right
session, and whether the bot read anything itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image
from typer.testing import CliRunner

from opticmem import InMemoryStore, OpticalMemory, PressureDecay, RenderSettings, Tier
from opticmem.artefacts import Item, Job, rec_key
from opticmem.cli import app
from opticmem.encoder.codec import (
    Recollection,
    VisionTokens,
    checkpoint_codec_name,
    weights_dir,
)
from opticmem.errors import (
    ConfigurationError,
    StoreError,
    StoreUnavailableError,
    StoreURLError,
)
from opticmem.recollect_queue import (
    GROUP,
    QueuedPage,
    QueueStats,
    RedisRecollectQueue,
    stream_key,
)
from opticmem.recollect_worker import MAX_BATCH_SIZE, MAX_CLAIM_IDLE, RecollectWorker
from opticmem.redis_store import RedisStore

pytestmark = pytest.mark.redis

SMALL = RenderSettings(max_rows=6)
TENANT = "acme"


class Digest:
    """Reads a page back as ``tier:`` + a digest of its pixels; counts its decode batches."""

    render_settings = None

    def __init__(self, name: str = "digest") -> None:
        self.name = name
        self.batches: list[int] = []

    def encode(self, images: Sequence[Any], tier: Tier) -> list[VisionTokens]:
        out = []
        for img in images:
            digest = hashlib.sha256(np.asarray(img, np.uint8).tobytes()).digest()
            grid = np.zeros((tier.grid, tier.grid, 1), np.float32)
            grid.flat[:8] = np.frombuffer(digest[:8], np.uint8)
            out.append(VisionTokens(tier, grid, codec=self.name))
        return out

    def decode(self, tokens: Sequence[VisionTokens], *,
               max_new_tokens: int | None = None) -> list[Recollection]:
        self.batches.append(len(tokens))
        return [Recollection(f"{t.tier.value}:" + bytes(t.grid.flat[:8].astype(np.uint8)).hex(),
                             t.tier, 0.9, 8, codec=self.name) for t in tokens]


def talk(n: int, topic: str = "the quarterly plan") -> list[tuple[str, str]]:
    return [("user", f"turn {i}: {topic}, line by line, with its owners " * 6)
            for i in range(n)]


def expected(mem: OpticalMemory, session: str, page_no: int, tier: Tier) -> str:
    """What the digest codec reads from the page, computed here from its image."""
    image = Image.open(io.BytesIO(mem.page_png(session, page_no, tier)))
    codec = Digest()
    return codec.decode(codec.encode([image], tier))[0].text


@pytest.fixture
def stores(redis_url: str) -> Iterator[tuple[RedisStore, RedisStore]]:
    """Two stores of tenant ``acme`` on the test server: a bot's and a worker's."""
    bot, worker = (RedisStore.from_url(redis_url, tenant=TENANT) for _ in range(2))
    try:
        yield bot, worker
    finally:
        bot.close()
        worker.close()


EVERY_PAGE_LARGE = PressureDecay()
"""A policy that shows every recent page at Large: each page a bot seals is queued at
once (under the default policy only those it shows at Large are)."""


def bot(store: RedisStore, codec: Any = None, **kw: Any) -> OpticalMemory:
    return OpticalMemory(store, codec=codec or Digest(), recollect="queue", verbatim_turns=2,
                         render_settings=SMALL, **kw)


def fail_session(worker: RecollectWorker, session: str, exc: Exception,
                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every read of a batch holding a page of ``session`` raise ``exc``."""
    real = worker._artefacts.recollections_of

    def failing(items: Sequence[Item]) -> list[Recollection]:
        if any(s == session for s, _ in items):
            raise exc
        return real(items)

    monkeypatch.setattr(worker._artefacts, "recollections_of", failing)


def image_pages(mem: OpticalMemory, session: str) -> list[tuple[int, Tier]]:
    return [(p.record.page_no, p.tier) for p in mem.context(session).pages if p.shown == "image"]


def test_a_worker_reads_every_bots_pages_in_batches_across_sessions(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    bot_store, worker_store = stores
    one, two = bot(bot_store), bot(bot_store)  # two bot processes, one server
    for mem, session in ((one, "ann"), (one, "bob"), (two, "cy")):
        mem.add_many(session, talk(24))
        mem.context(session)
    queue = RedisRecollectQueue.for_store(bot_store)
    waiting = queue.stats().waiting
    assert waiting > 0 and not one.flush(0.1)  # nothing read yet: flush times out

    codec = Digest()
    worker = RecollectWorker(worker_store, codec, batch_size=64)
    totals = worker.run(once=True)
    assert totals.read == waiting == sum(codec.batches) and totals.dead == totals.stale == 0
    per_session = max(len(one.pages("ann")), len(one.pages("bob")), len(two.pages("cy")))
    assert max(codec.batches) > per_session  # one decode call served several sessions
    assert queue.stats().backlog == 0
    assert one.flush(5) and two.flush(5)

    for mem, session in ((one, "ann"), (one, "bob"), (two, "cy")):
        ctx = mem.context(session)
        shown = [p for p in ctx.pages if p.shown == "image"]
        assert shown
        text = ctx.text()
        for p in shown:
            assert expected(mem, session, p.record.page_no, p.tier) in text
    assert one.codec is not None and two.codec is not None
    assert one.codec.batches == two.codec.batches == []  # type: ignore[attr-defined]
    one.close()
    two.close()


def test_pages_drawn_by_a_process_pool_read_the_same(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    """With draw_workers, missing page images are drawn in spawned processes: the same
    pixels (so the same readings) and the same PNG bytes as drawn in the worker itself."""
    bot_store, worker_store = stores
    mem = bot(bot_store)
    for session in ("ann", "bob"):
        mem.add_many(session, talk(20))
        mem.context(session)
    with RecollectWorker(worker_store, Digest(), draw_workers=2, batch_size=64) as worker:
        assert worker.run(once=True).read > 0
    local = OpticalMemory(codec=Digest(), render_settings=SMALL)  # draws in-process
    for session in ("ann", "bob"):
        for p in mem.context(session).pages:
            if p.shown != "image":
                continue
            job = Job(p.record, p.tier)
            [rec] = worker._artefacts.cached_recollections(session, [job])
            assert rec is not None
            assert rec.text == expected(mem, session, p.record.page_no, p.tier)
            [png] = local._artefacts.pngs(session, [job])
            assert png == mem.page_png(session, p.record.page_no, p.tier)


def test_flush_waits_for_a_running_worker(stores: tuple[RedisStore, RedisStore]) -> None:
    bot_store, worker_store = stores
    worker = RecollectWorker(worker_store, Digest())
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, kwargs={"stop": stop, "block": 0.05})
    thread.start()
    try:
        mem = bot(bot_store)
        mem.add_many("s", talk(30))
        pages = image_pages(mem, "s")
        assert mem.flush(20)
        found = worker_store.get_blobs("s", [rec_key("digest", mem.pages("s")[n], t)
                                             for n, t in pages])
        assert all(found)
        assert mem.recall("s", "quarterly plan", decode=False)
        assert mem.codec.batches == []  # type: ignore[union-attr]
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def worker_died_holding_pages(stores: tuple[RedisStore, RedisStore], consumer: str,
                              claim_idle: float) -> tuple[OpticalMemory, int]:
    """A bot's memory whose session queued pages, all taken by a worker named ``consumer``
    that died before reading them; and how many it holds."""
    bot_store, worker_store = stores
    mem = bot(bot_store)
    mem.add_many("s", talk(20))
    mem.context("s")
    queued = RedisRecollectQueue.for_store(bot_store).stats().waiting
    doomed = RecollectWorker(worker_store, Digest(), consumer=consumer, claim_idle=claim_idle)
    taken, _ = doomed._take(0)
    assert len(taken) == queued > 0
    return mem, queued


def test_pages_a_dead_worker_took_are_taken_over(stores: tuple[RedisStore, RedisStore]) -> None:
    bot_store, worker_store = stores
    # claim_idle leaves a loaded 2-core CI machine a second between the two workers' steps
    mem, queued = worker_died_holding_pages(stores, "doomed", 1.0)
    heir = RecollectWorker(worker_store, Digest(), consumer="heir", claim_idle=1.0)
    assert heir.step() is None  # not idle long enough: still the doomed worker's
    time.sleep(1.1)
    report = heir.step()
    assert report is not None and report.taken == report.read == queued
    stats = RedisRecollectQueue.for_store(bot_store).stats()
    assert stats.backlog == 0 and stats.consumers == 2
    assert mem.flush(5)


def test_a_worker_restarted_under_its_name_takes_its_pages_back_at_once(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    """A worker restarted under the consumer name it died with (a pod's name) waited
    claim_idle (300 s by default) before it read the pages it held: XAUTOCLAIM takes only
    idle entries, and XREADGROUP ">" only new ones."""
    bot_store, worker_store = stores
    mem, queued = worker_died_holding_pages(stores, "pod-0", 300)
    reborn = RecollectWorker(worker_store, Digest(), consumer="pod-0", claim_idle=300,
                             batch_size=max(1, queued - 1))
    first = reborn.step()
    assert first is not None and first.taken == first.read == max(1, queued - 1)
    while RedisRecollectQueue.for_store(bot_store).stats().backlog:
        assert reborn.step() is not None  # the rest of what it held, a batch at a time
    assert mem.flush(5)
    assert reborn.step() is None  # nothing taken twice


def test_a_page_that_fails_every_time_goes_to_the_dead_letters(
    stores: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot_store, worker_store = stores
    mem = bot(bot_store)
    for session in ("good", "bad"):
        mem.add_many(session, talk(16))
        mem.context(session)
    bad = sum(f[b"session"] == b"bad"
              for _, f in bot_store._sync().xrange(stream_key(TENANT)))
    worker = RecollectWorker(worker_store, Digest(), claim_idle=0.05, max_deliveries=2)
    fail_session(worker, "bad", RuntimeError("CUDA out of memory"), monkeypatch)
    with caplog.at_level(logging.DEBUG, logger="opticmem"):
        first = worker.step()
        assert first is not None and first.failed == bad and first.read > 0
        for _ in range(20):  # retried after claim_idle, twice, then given up on
            time.sleep(0.06)
            worker.step()
            if RedisRecollectQueue.for_store(bot_store).stats().backlog == 0:
                break
    queue = RedisRecollectQueue.for_store(bot_store)
    assert queue.stats().backlog == 0 and queue.stats().dead == bad
    letters = queue.dead(100)
    assert {d.fields["session"] for d in letters} == {"bad"}
    assert all(d.deliveries == 3 and "delivered 3 times" in d.reason for d in letters)
    tracebacks = [r for r in caplog.records
                  if "reading queued pages failed" in r.getMessage() and r.exc_info]
    assert len(tracebacks) == 1  # the same failure is not logged in full every time
    assert mem.flush(5)  # dead letters do not hold flush up
    ctx = mem.context("good")
    assert all(expected(mem, "good", p.record.page_no, p.tier) in ctx.text()
               for p in ctx.pages if p.shown == "image")


def test_pages_of_a_session_begun_again_are_not_confused(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    bot_store, worker_store = stores
    mem = bot(bot_store)
    mem.add_many("s", talk(16))
    mem.context("s")
    old = RedisRecollectQueue.for_store(bot_store).stats().waiting
    mem.delete_session("s")
    mem.add_many("s", talk(16, topic="a different matter entirely"))
    pages = image_pages(mem, "s")
    new = RedisRecollectQueue.for_store(bot_store).stats().waiting - old
    worker = RecollectWorker(worker_store, Digest(), batch_size=100)
    report = worker.step()
    assert report is not None and report.stale == old and report.read == new
    for n, tier in pages:
        [rec] = worker._artefacts.cached_recollections("s", [Job(mem.pages("s")[n], tier)])
        assert rec is not None and rec.text == expected(mem, "s", n, tier)


def test_entries_a_worker_must_not_read_go_to_the_dead_letters_at_once(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    bot_store, worker_store = stores
    mem = bot(bot_store, codec=Digest("another-model"))
    mem.add_many("s", talk(12))
    queued = RedisRecollectQueue.for_store(bot_store).stats().waiting
    raw = bot_store._sync()
    raw.xadd(stream_key(TENANT), {"not": "ours"})
    worker = RecollectWorker(worker_store, Digest(), batch_size=100)
    report = worker.step()
    assert report is not None and report.dead == queued + 1 and report.read == 0
    reasons = [d.reason for d in RedisRecollectQueue.for_store(bot_store).dead(100)]
    assert sum("another-model" in r for r in reasons) == queued
    assert sum("unreadable recollection queue entry" in r for r in reasons) == 1


def test_a_bot_whose_bundled_codec_is_not_loaded_yet_names_it_to_the_workers(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    """Its entries named no codec, so a worker of another codec read them, and the bot,
    looking its readings up under the bundled codec's name, never found them: the
    worker's work was lost, and nothing said so."""
    bot_store, worker_store = stores
    mem = OpticalMemory(bot_store, recollect="queue", verbatim_turns=2, render_settings=SMALL)
    mem.add_many("s", talk(12))  # codec "bundled", never loaded: named from its files
    assert mem._codec.peek() is None
    bundled = checkpoint_codec_name(weights_dir())
    fields = bot_store._sync().xrange(stream_key(TENANT), count=1)[0][1]
    entry = QueuedPage.from_fields(fields, "first")
    assert entry.codec == bundled and entry.settings == SMALL and entry.tier is Tier.LARGE
    queued = RedisRecollectQueue.for_store(bot_store).stats().waiting
    other = RecollectWorker(worker_store, Digest("random:test:0"), batch_size=1).step()
    assert other is not None and other.read == 0 and other.dead == 1  # said, not lost
    report = RecollectWorker(worker_store, Digest(bundled), batch_size=100).step()
    assert report is not None and report.read == queued - 1 and report.dead == 0
    assert mem._codec.peek() is None  # the bot loaded no model for any of it
    mem.close()


def test_queue_mode_is_refused_where_it_cannot_work(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"needs a Redis store.*an InMemoryStore"):
        OpticalMemory(InMemoryStore(), codec=Digest(), recollect="queue")
    elsewhere = RedisRecollectQueue.from_url(redis_url, tenant=TENANT)
    with pytest.raises(ConfigurationError, match=r"^a recollection queue needs a Redis store"):
        OpticalMemory(InMemoryStore(), codec=Digest(), recollect=elsewhere)
    elsewhere.close()
    with pytest.raises(ConfigurationError, match="needs a codec"):
        OpticalMemory(redis_url, codec=None, recollect="queue")
    with pytest.raises(ConfigurationError, match="recollect must be"):
        OpticalMemory(codec=None, recollect="sometimes")  # type: ignore[arg-type]
    store = RedisStore.from_url(redis_url, tenant=TENANT)
    other = RedisRecollectQueue.for_store(RedisStore.from_url(redis_url, tenant="other"))
    with pytest.raises(ConfigurationError, match="tenant 'other'"):
        OpticalMemory(store, codec=Digest(), recollect=other)
    mem = OpticalMemory(store, codec=Digest(), recollect=RedisRecollectQueue.for_store(store))
    assert mem.recollect_mode == "queue"
    store.close()


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"max_deliveries": True},
                                 {"draw_workers": -1}, {"claim_idle": 0},
                                 {"forget_idle": float("nan")}])
def test_a_worker_given_a_bad_setting_says_which(
    stores: tuple[RedisStore, RedisStore], bad: dict[str, Any],
) -> None:
    """A bare ValueError before; the package's ConfigurationError (still a ValueError)."""
    with pytest.raises(ConfigurationError, match=next(iter(bad))):
        RecollectWorker(stores[1], Digest(), **bad)


def test_a_worker_rides_out_a_redis_restart(
    server_factory: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    server = server_factory()
    bot_store = RedisStore.from_url(server.url, tenant=TENANT)
    worker_store = RedisStore.from_url(server.url, tenant=TENANT, retries=0)
    worker = RecollectWorker(worker_store, Digest())
    stop = threading.Event()
    reads: list[int] = []
    thread = threading.Thread(target=worker.run, kwargs={
        "stop": stop, "block": 0.05, "on_batch": lambda r: reads.append(r.read)})
    with caplog.at_level(logging.WARNING, logger="opticmem.recollect_worker"):
        thread.start()
        server.kill()
        time.sleep(0.5)  # the worker's steps fail meanwhile; it backs off and goes on
        server.start()
    assert any("worker step failed" in r.getMessage() for r in caplog.records)
    try:
        mem = bot(bot_store)
        mem.add_many("s", talk(16))
        mem.context("s")
        assert mem.flush(30)
        # the two newest pages read ahead at Large as sealed, the others at their tiers
        assert len(mem.pages("s")) > 2
        assert sum(reads) == 2 + sum(t is not Tier.LARGE for _, t in image_pages(mem, "s"))
    finally:
        stop.set()
        thread.join(60)
        bot_store.close()
        worker_store.close()
    assert not thread.is_alive()


def test_the_worker_and_queue_commands(redis_url: str) -> None:
    from opticmem.encoder.ocr import OCRCodec

    store = RedisStore.from_url(redis_url, tenant=TENANT)
    mem = OpticalMemory(store, codec=OCRCodec.random("test", seed=0), recollect="queue",
                        verbatim_turns=2, render_settings=SMALL)
    mem.add_many("s", talk(6))
    url = f"{redis_url}?tenant={TENANT}"
    runner = CliRunner()
    status = json.loads(runner.invoke(app, ["queue", url, "--json"]).stdout)
    assert status["waiting"] > 0 and status["dead"] == 0
    result = runner.invoke(app, ["worker", url, "--codec", "random", "--once", "--json",
                                 "--max-tokens", "4", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["read"] == status["waiting"] and done["codec"] == "random:test:0"
    status = json.loads(runner.invoke(app, ["queue", url, "--json"]).stdout)
    assert status["waiting"] == status["taken"] == 0
    assert status["workers"] == 0  # it left the group when it stopped
    assert mem.flush(1)
    bad = runner.invoke(app, ["worker", "sqlite:///x.db", "--once"])
    assert bad.exit_code == 2 and "redis://" in bad.output
    # a scheme is case-insensitive, as open_store takes it; an empty consumer name is
    # refused rather than silently replaced by the default one
    upper = "REDIS://" + url.split("://", 1)[1]
    status = json.loads(runner.invoke(app, ["queue", upper, "--json"]).stdout)
    assert status["waiting"] == 0
    bad = runner.invoke(app, ["worker", url, "--codec", "random", "--once", "--consumer", " "])
    assert bad.exit_code == 2 and "consumer name is empty" in bad.output
    mem.close()
    store.close()
    raw = redis.Redis.from_url(redis_url)
    assert raw.xinfo_groups(stream_key(TENANT))[0]["name"] == GROUP.encode()
    raw.close()


def test_bots_and_a_worker_on_a_redis_cluster(redis_cluster_url: str) -> None:
    """The queue's two streams share the tenant's hash tag (one slot); the sessions' keys
    spread over the nodes. Queueing, taking, claiming, acknowledging and burying all work
    through a cluster client."""
    bot_store = RedisStore.from_url(redis_cluster_url, tenant=TENANT, cluster=True)
    worker_store = RedisStore.from_url(redis_cluster_url, tenant=TENANT, cluster=True)
    try:
        mem = bot(bot_store)
        sessions = [f"user-{i}" for i in range(6)]
        for s in sessions:
            mem.add_many(s, talk(12))
            mem.context(s)
        bot_store._sync().xadd(stream_key(TENANT), {"not": "ours"})
        with RecollectWorker(worker_store, Digest(), batch_size=200) as worker:
            totals = worker.run(once=True)
        assert totals.read > len(sessions) and totals.dead == 1
        assert mem.flush(10)
        queue = RedisRecollectQueue.for_store(bot_store)
        assert queue.stats().backlog == 0 and queue.stats().dead == 1
        for s in sessions:
            ctx = mem.context(s)
            assert all(expected(mem, s, p.record.page_no, p.tier) in ctx.text()
                       for p in ctx.pages if p.shown == "image")
        assert mem.codec.batches == []  # type: ignore[union-attr]
    finally:
        bot_store.close()
        worker_store.close()


def test_a_session_deleted_while_a_worker_reads_it_gets_none_of_its_readings(
    stores: tuple[RedisStore, RedisStore], redis_url: str,
) -> None:
    """The bot deletes a session after the worker took its pages and before it wrote
    their readings: the writes are refused, so no key of the session comes back (no
    orphans without a TTL), and the session begun again under the same id — whose page 0
    has the same cache id as the old page 0 — is never served the old page's reading."""
    bot_store, worker_store = stores
    mem = bot(bot_store)
    mem.add_many("s", talk(16))
    mem.context("s")
    worker = RecollectWorker(worker_store, Digest(), batch_size=100)
    encode = worker._artefacts.vision_tokens_of

    def deleted_meanwhile(items: Sequence[Item]) -> list[VisionTokens]:
        out = encode(items)
        mem.delete_session("s")
        return out

    worker._artefacts.vision_tokens_of = deleted_meanwhile  # type: ignore[method-assign]
    assert worker.step() is not None
    raw = redis.Redis.from_url(redis_url)
    assert list(raw.scan_iter(match="opticmem:{acme:s}*")) == []
    raw.close()

    worker._artefacts.vision_tokens_of = encode  # type: ignore[method-assign]
    mem.add_many("s", talk(16, topic="a different matter entirely"))
    pages = image_pages(mem, "s")
    assert any(n == 0 for n, _ in pages)  # a page 0 again, with the old one's cache id
    worker.run(once=True)
    assert mem.flush(5)
    text = mem.context("s").text()
    assert all(expected(mem, "s", n, t) in text for n, t in pages)
    mem.close()


def test_a_page_two_bots_queued_is_read_once(stores: tuple[RedisStore, RedisStore]) -> None:
    """Bot processes behind a load balancer each queue the pages they show: the same page
    at the same tier twice in one batch is drawn, encoded and decoded once."""
    bot_store, worker_store = stores
    one, two = bot(bot_store), bot(bot_store)
    one.add_many("s", talk(16))
    one.context("s")
    two.context("s")  # the next request of the same user lands on another process
    entries = bot_store._sync().xrange(stream_key(TENANT))
    unique = {(f[b"page"], f[b"tier"]) for _, f in entries}
    assert len(entries) > len(unique)  # both bots queued the pages they showed
    codec = Digest()
    report = RecollectWorker(worker_store, codec, batch_size=100).step()
    assert report is not None and report.taken == len(entries)
    assert sum(codec.batches) == report.read == len(unique)
    assert report.cached == len(entries) - len(unique)
    assert RedisRecollectQueue.for_store(bot_store).stats().backlog == 0
    assert one.flush(5) and two.flush(5)


def test_flush_waits_for_pages_still_being_queued_but_not_after_close(
    stores: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread that flushes while another is queueing its pages (one round trip away)
    must not be told that all is read; after close, flush returns at once."""
    bot_store, worker_store = stores
    mem = bot(bot_store)
    assert mem._worker is not None
    queue = mem._worker.queue  # type: ignore[attr-defined]
    sending, release = threading.Event(), threading.Event()
    real = queue.submit

    def slow(*args: Any, **kw: Any) -> list[str]:
        sending.set()
        release.wait(10)
        return real(*args, **kw)

    monkeypatch.setattr(queue, "submit", slow)
    adder = threading.Thread(target=mem.add_many, args=("s", talk(12)))
    adder.start()
    assert sending.wait(10)
    assert not mem.flush(0.1)  # the pages are on their way to the queue
    release.set()
    adder.join(10)
    assert not mem.flush(0.1)  # ... and now on it, with no worker yet
    RecollectWorker(worker_store, Digest()).run(once=True)
    assert mem.flush(5)

    sending.clear()
    release.clear()
    adder = threading.Thread(target=mem.add_many, args=("t", talk(12)))
    adder.start()
    assert sending.wait(10)
    mem.close()
    release.set()
    adder.join(10)
    assert mem.flush(0)  # closed: the pages stay queued for the workers, unwaited for
    assert RedisRecollectQueue.for_store(bot_store).stats().waiting > 0


def test_flush_rides_out_a_redis_restart(server_factory: Any) -> None:
    """Polling the queue fails while Redis restarts: flush polls again until its timeout,
    and says the server is unreachable (typed) only if it still is then."""
    server = server_factory()
    bot_store = RedisStore.from_url(server.url, tenant=TENANT)
    worker_store = RedisStore.from_url(server.url, tenant=TENANT)
    try:
        mem = bot(bot_store)
        mem.add_many("s", talk(12))
        mem.context("s")
        server.kill()

        def restart_and_read() -> None:
            time.sleep(0.3)
            server.start()
            RecollectWorker(worker_store, Digest()).run(once=True)

        reader = threading.Thread(target=restart_and_read)
        reader.start()
        assert mem.flush(30)
        reader.join(30)

        mem.add_many("s", talk(12, topic="more of it"))
        server.kill()
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="recollection queue"):
            mem.flush(0.3)
        assert time.monotonic() - t0 >= 0.3
    finally:
        bot_store.close()
        worker_store.close()


def test_a_bot_that_never_flushes_does_not_remember_every_entry(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    """The entries a bot queued are remembered for flush until seen gone; a bot that
    never flushes must not keep one per page it ever queued."""
    bot_store, worker_store = stores
    mem = bot(bot_store, policy=EVERY_PAGE_LARGE)
    rec = mem._worker
    assert rec is not None
    rec._prune_at = rec.PRUNE_AT = 8  # type: ignore[attr-defined]
    worker = RecollectWorker(worker_store, Digest(), batch_size=100)
    queued = 0
    for i in range(6):
        mem.add_many(f"s{i}", talk(16))
        mem.context(f"s{i}")
        queued += worker.run(once=True).read
    assert queued > 40
    assert len(rec._entries) < 16  # type: ignore[attr-defined]
    assert mem.flush(5)


def test_idle_entries_behind_many_busy_ones_are_claimed(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    """XAUTOCLAIM looks at up to 10 × count pending entries per call. A worker that
    always starts from the beginning of the pending list never reaches idle entries
    behind that many busy ones (held by live workers); it must go on where it stopped."""
    bot_store, worker_store = stores
    mem = bot(bot_store, policy=EVERY_PAGE_LARGE)
    mem.add_many("s", talk(24))
    mem.context("s")
    dead = RecollectWorker(worker_store, Digest(), consumer="dead")
    taken, _ = dead._take(0)
    assert len(taken) >= 12
    time.sleep(1.5)
    raw = bot_store._sync()
    raw.xclaim(stream_key(TENANT), GROUP, "busy", 0, [e for e, _ in taken[:11]])
    heir = RecollectWorker(worker_store, Digest(), consumer="heir", batch_size=1,
                           claim_idle=1.0)  # the busy entries stay younger for 3 steps
    reports = [heir.step() for _ in range(3)]
    assert [r.taken for r in reports if r is not None] == [1, 1]


def test_a_drawing_process_that_dies_does_not_end_batching(
    stores: tuple[RedisStore, RedisStore], caplog: pytest.LogCaptureFixture,
) -> None:
    """A drawing process killed (the OOM killer, a crash in a font library) breaks a
    process pool for good: the worker must draw that batch itself and start a new pool,
    not fall back to reading page by page (one decode call per page) from then on."""
    bot_store, worker_store = stores
    mem = bot(bot_store)
    codec = Digest()
    with RecollectWorker(worker_store, codec, draw_workers=1, batch_size=100) as worker:
        mem.add_many("a", talk(12))
        mem.context("a")
        assert worker.step() is not None
        pool = worker._pool
        assert pool is not None
        drawing = list(pool._pool._processes or ())
        assert drawing
        for pid in drawing:
            os.kill(pid, signal.SIGKILL)
        mem.add_many("b", talk(12))
        mem.context("b")
        codec.batches.clear()
        with caplog.at_level(logging.WARNING, logger="opticmem"):
            report = worker.step()
        assert report is not None and report.read > 1 and report.failed == 0
        assert codec.batches == [report.read]  # still one decode call for the batch
        assert not any("one by one" in r.getMessage() for r in caplog.records)
        assert worker._pool is not None and list(worker._pool.map(abs, [-1, 2])) == [1, 2]
    ctx = mem.context("b")
    assert all(expected(mem, "b", p.record.page_no, p.tier) in ctx.text()
               for p in ctx.pages if p.shown == "image")


def test_closing_a_worker_while_it_draws_stops_it_cleanly(
    stores: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """close() from another thread while the worker's pool is drawing a batch: the
    batch is finished (drawn here), run() returns, and nothing escapes the thread."""
    import opticmem.artefacts as artefacts

    bot_store, worker_store = stores
    mem = bot(bot_store)
    mem.add_many("s", talk(16))
    mem.context("s")
    drawing = threading.Event()
    real = artefacts.draw_tier_png

    def slow(*args: Any) -> Any:
        drawing.set()
        time.sleep(0.05)
        return real(*args)

    monkeypatch.setattr(artefacts, "draw_tier_png", slow)
    worker = RecollectWorker(worker_store, Digest(), batch_size=100)
    pool = ThreadPoolExecutor(1)  # a pool the test's slow drawing reaches
    worker._pool = worker._artefacts.draw_pool = pool  # type: ignore[assignment]
    errors: list[BaseException] = []
    totals: list[Any] = []

    def run() -> None:
        try:
            totals.append(worker.run(block=0.05))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert drawing.wait(10)
    worker.close()
    thread.join(20)
    assert not thread.is_alive() and errors == []
    assert totals[0].read > 0 and totals[0].failed == 0
    assert RedisRecollectQueue.for_store(bot_store).stats().backlog == 0


def test_the_worker_command_refuses_a_device_it_cannot_use(redis_url: str) -> None:
    url = f"{redis_url}?tenant={TENANT}"
    for device in ("bogus", "cuda:99"):
        result = CliRunner().invoke(app, ["worker", url, "--codec", "random", "--once",
                                          "--device", device, "--json"])
        assert result.exit_code == 2, result.output
        assert json.loads(result.stdout)["error"].startswith(f"--device {device}")


def test_the_worker_command_refuses_a_codec_that_is_no_choice_or_directory(
    redis_url: str, tmp_path: Path,
) -> None:
    """``eval --codec bogus`` is a usage error (exit 2); the worker's was exit 1, after
    it had reached Redis."""
    url = f"{redis_url}?tenant={TENANT}"
    bogus = str(tmp_path / "bogus")
    result = CliRunner().invoke(app, ["worker", url, "--codec", bogus, "--once", "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout) == {
        "error": f"--codec: {bogus!r} is not bundled, random or a checkpoint directory"}
    human = CliRunner().invoke(app, ["worker", url, "--codec", bogus, "--once"])
    assert human.exit_code == 2 and "Invalid value for --codec" in human.output


def test_the_worker_command_stops_on_a_signal_and_at_once_on_a_second(
    redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM (or Ctrl-C) lets the batch in hand finish and prints the summary; a second
    one stops a worker stuck in a batch at once, with 128 + the signal's number and
    still one JSON object."""
    import opticmem.worker_commands as commands

    monkeypatch.setattr(commands, "_load_codec", lambda *a: Digest())
    url = f"{redis_url}?tenant={TENANT}"
    store = RedisStore.from_url(redis_url, tenant=TENANT)
    mem = bot(store)
    mem.add_many("s", talk(12))
    mem.context("s")
    pending = RedisRecollectQueue.for_store(store).stats().waiting

    def signal_when(ready: threading.Event, times: int) -> threading.Thread:
        main = threading.main_thread().ident
        assert main is not None

        def send() -> None:
            assert ready.wait(20)
            for _ in range(times):
                # A signal that lands just before the main thread enters a sleep is only
                # handled when the next one interrupts it, and the two count as one: let
                # the main thread get into the step first.
                time.sleep(0.2)
                signal.pthread_kill(main, signal.SIGTERM)
        thread = threading.Thread(target=send)
        thread.start()
        return thread

    batched = threading.Event()
    real_step = RecollectWorker.step

    def step(self: RecollectWorker, block: float = 0.0) -> Any:
        report = real_step(self, block)
        if report is not None:
            batched.set()
        return report

    monkeypatch.setattr(RecollectWorker, "step", step)
    sender = signal_when(batched, 1)
    result = CliRunner().invoke(app, ["worker", url, "--json"])
    sender.join(10)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["read"] == pending

    stuck_in = threading.Event()

    def stuck(self: RecollectWorker, block: float = 0.0) -> Any:
        stuck_in.set()
        time.sleep(5)  # a batch that takes far too long
        return None

    monkeypatch.setattr(RecollectWorker, "step", stuck)
    handler = signal.getsignal(signal.SIGTERM)
    sender = signal_when(stuck_in, 2)
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["worker", url, "--json"])
    sender.join(10)
    assert time.monotonic() - t0 < 3
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    assert "second" in json.loads(result.stdout)["error"]
    assert signal.getsignal(signal.SIGTERM) is handler  # put back
    mem.close()
    store.close()


def test_a_workers_readings_do_not_extend_a_sessions_life(redis_url: str) -> None:
    """On a store with a TTL, a session expires that long after its bot last wrote to
    it. A worker reading its pages later (a backlog) must not restart that clock — nor
    leave a key that outlives the session."""
    bot_store = RedisStore.from_url(redis_url, tenant=TENANT, ttl=3600)
    worker_store = RedisStore.from_url(redis_url, tenant=TENANT, ttl=3600)
    try:
        mem = bot(bot_store)
        mem.add_many("s", talk(16))
        mem.context("s")
        raw = redis.Redis.from_url(redis_url)
        keys = list(raw.scan_iter(match="opticmem:{acme:s}:*"))
        for key in keys:  # the bot wrote last almost an hour ago
            raw.pexpire(key, 5000)
        assert RecollectWorker(worker_store, Digest()).run(once=True).read > 0
        written = list(raw.scan_iter(match="opticmem:{acme:s}:*"))
        assert len(written) > len(keys)  # the readings (and images) are there
        assert all(0 < raw.pttl(k) <= 5000 for k in written)
        raw.close()
        mem.close()
    finally:
        bot_store.close()
        worker_store.close()


def worker_reads_a_session(bot_store: RedisStore, worker_store: RedisStore,
                           raw: redis.Redis) -> tuple[OpticalMemory, list[bytes]]:
    """A bot's session ``s`` read once by a worker: the bot and the session's keys after."""
    mem = bot(bot_store)
    mem.add_many("s", talk(16))
    mem.context("s")
    assert RecollectWorker(worker_store, Digest()).run(once=True).read > 0
    written = list(raw.scan_iter(match="opticmem:{acme:s}:*"))
    assert any(b":b:" in k for k in written)  # the readings are there
    return mem, written


def test_a_worker_opened_without_the_bots_ttl_leaves_no_key_outliving_the_session(
    redis_url: str,
) -> None:
    """``opticmem worker URL`` asks only for the tenant: a worker opened without the
    bots' ``ttl`` must still give its readings (and the session's blob index) what is
    left of the session's life, or they stay in Redis for ever once the session expires."""
    bot_store = RedisStore.from_url(redis_url, tenant=TENANT, ttl=3600)
    worker_store = RedisStore.from_store_url(f"{redis_url}?tenant={TENANT}")  # no ttl
    raw = redis.Redis.from_url(redis_url)
    try:
        mem, written = worker_reads_a_session(bot_store, worker_store, raw)
        assert all(0 < raw.pttl(k) <= 3_600_000 for k in written), [
            k for k in written if raw.pttl(k) < 0]
        mem.close()
    finally:
        raw.close()
        bot_store.close()
        worker_store.close()


def test_a_worker_opened_with_a_ttl_the_bots_lack_never_makes_a_session_expire(
    redis_url: str,
) -> None:
    """Bots that keep their sessions for ever, a worker whose URL carries a ``ttl``: its
    readings must not set an expiry on the session (its whole archive would be gone a
    ``ttl`` later), nor get one themselves."""
    bot_store = RedisStore.from_url(redis_url, tenant=TENANT)  # no ttl: kept for ever
    worker_store = RedisStore.from_store_url(f"{redis_url}?tenant={TENANT}&ttl=60")
    raw = redis.Redis.from_url(redis_url)
    try:
        mem, written = worker_reads_a_session(bot_store, worker_store, raw)
        assert {k: raw.pttl(k) for k in written if raw.pttl(k) != -1} == {}
        mem.close()
    finally:
        raw.close()
        bot_store.close()
        worker_store.close()


def test_a_worker_that_closes_leaves_the_group_unless_it_holds_entries(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    """Workers restart (deploys, autoscaling) under new host-pid names: one that closes
    cleanly must not stay in the group for good, or "workers" only ever grows. One that
    still holds entries stays, so that they can be claimed from it."""
    bot_store, worker_store = stores
    mem = bot(bot_store)
    mem.add_many("s", talk(12))
    queue = RedisRecollectQueue.for_store(bot_store)
    holder = RecollectWorker(worker_store, Digest(), consumer="holder", batch_size=2)
    assert len(holder._take(0)[0]) == 2
    holder.close()
    for n in range(3):
        with RecollectWorker(worker_store, Digest(), consumer=f"run-{n}") as worker:
            worker.run(once=True)
    stats = queue.stats()
    assert stats.consumers == 1 and stats.taken == 2  # the holder, with its 2 entries
    with RecollectWorker(worker_store, Digest(), consumer="heir", claim_idle=0.01) as heir:
        time.sleep(0.02)
        assert heir.run(once=True).read == 2
    assert queue.stats().backlog == 0


def test_killed_workers_are_taken_out_of_the_group_once_their_pages_are_claimed(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    """A killed worker never leaves the group itself: once another has claimed what it
    held and it has been silent for ``forget_idle``, a live worker takes it out. A live
    worker, and a silent one that still holds entries, stay."""
    bot_store, worker_store = stores
    mem = bot(bot_store, policy=EVERY_PAGE_LARGE)
    mem.add_many("s", talk(12))
    queue = RedisRecollectQueue.for_store(bot_store)
    queued = queue.stats().waiting
    killed = RecollectWorker(worker_store, Digest(), consumer="killed", batch_size=2)
    assert len(killed._take(0)[0]) == 2  # then killed: no close(), no leave()
    idle = RecollectWorker(worker_store, Digest(), consumer="idle")
    idle._take(0)  # takes the rest, and reads nothing either
    assert queue.stats().consumers == 2
    time.sleep(0.1)
    assert queue.prune(0.05) == []  # both still hold entries
    assert queue.prune(3600) == []
    with RecollectWorker(worker_store, Digest(), consumer="heir", claim_idle=0.05,
                         forget_idle=0.05) as heir:
        assert heir.run(once=True).read == queued  # all claimed from the other two
        time.sleep(0.1)
        heir.step()  # its next look at the group
        stats = queue.stats()
        assert stats.backlog == 0 and stats.consumers == 1  # only the heir
        assert queue.prune(0.0001, keep="heir") == []
    assert mem.flush(5)


def test_an_entry_of_raw_bytes_is_buried_as_it_was(
    stores: tuple[RedisStore, RedisStore], redis_url: str,
) -> None:
    """Anything may write to the stream: an entry whose field names and values are not
    UTF-8 goes to the dead letters byte for byte, and the queue command still prints
    one JSON object."""
    bot_store, worker_store = stores
    raw = bot_store._sync()
    fields = {b"\xff\xfe": b"\x80", b"\xff\xfd": b"\x81", b"session": b"caf\xe9"}
    raw.xadd(stream_key(TENANT), fields)  # type: ignore[arg-type]
    report = RecollectWorker(worker_store, Digest()).step()
    assert report is not None and report.dead == 1
    [(_, buried)] = raw.xrange(stream_key(TENANT) + ":dead")
    assert {k: v for k, v in buried.items() if k in fields} == fields
    assert b"UnicodeDecodeError" in buried[b"reason"]
    status = CliRunner().invoke(app, ["queue", f"{redis_url}?tenant={TENANT}", "--json"])
    assert status.exit_code == 0
    [letter] = json.loads(status.stdout)["dead_letters"]
    assert letter["session"] == "caf\ufffd" and "UnicodeDecodeError" in letter["reason"]


def test_a_page_the_codec_chokes_on_does_not_kill_the_worker(
    stores: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model fails on one odd page with whatever it raises (IndexError, TypeError,
    AssertionError from inside torch): the other pages of the batch are read, that one
    is left for a retry, and run() goes on — a worker that died on it would be
    restarted only to take it and die again."""
    bot_store, worker_store = stores
    mem = bot(bot_store)
    for session in ("good", "odd"):
        mem.add_many(session, talk(12))
    worker = RecollectWorker(worker_store, Digest(), batch_size=100)
    fail_session(worker, "odd", IndexError("index 4096 is out of bounds for dimension 0"),
                 monkeypatch)
    totals = worker.run(once=True)
    odd = sum(f[b"session"] == b"odd" for _, f in bot_store._sync().xrange(stream_key(TENANT)))
    assert odd > 0 and totals.failed == odd and totals.read > 0
    assert RedisRecollectQueue.for_store(bot_store).stats().taken == odd


def test_entries_deleted_while_a_worker_holds_them(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    """An operator trims the stream (XDEL, XTRIM) while a worker holds some entries:
    they still count as pending until claimed, so the backlog must not go negative,
    and the worker that takes over drops them and reads the rest."""
    bot_store, worker_store = stores
    mem = bot(bot_store, policy=EVERY_PAGE_LARGE)
    mem.add_many("s", talk(12))
    queue = RedisRecollectQueue.for_store(bot_store)
    taken, _ = RecollectWorker(worker_store, Digest(), consumer="gone")._take(0)
    assert len(taken) > 3
    bot_store._sync().xdel(stream_key(TENANT), *[e for e, _ in taken[:3]])
    stats = queue.stats()
    assert stats.waiting == 0 and stats.taken == len(taken)
    time.sleep(0.06)
    with RecollectWorker(worker_store, Digest(), consumer="heir", claim_idle=0.05) as heir:
        assert heir.run(once=True).read == len(taken) - 3
    # the heir left; the worker that died stays listed, holding nothing
    assert queue.stats() == QueueStats(waiting=0, taken=0, dead=0, consumers=1)
    assert mem.flush(1)


def test_a_damaged_page_record_buries_its_own_entries_only(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    """A page record the store cannot read (damaged, or written by another version) is
    that page's problem: its entries go to the dead letters at once, naming why, and the
    other pages of the batch — other sessions' too — are read, not failed with it until
    they are buried as undeliverable."""
    bot_store, worker_store = stores
    mem = bot(bot_store)
    for session in ("good", "bad"):
        mem.add_many(session, talk(16))
        mem.context(session)
    raw = bot_store._sync()
    entries = raw.xrange(stream_key(TENANT))
    damaged = sum(f[b"session"] == b"bad" and f[b"page"] == b"0" for _, f in entries)
    assert 0 < damaged < len(entries)
    raw.lset(bot_store._keys("bad").pages, 0, b'{"not": "a page"}')
    report = RecollectWorker(worker_store, Digest(), batch_size=100).step()
    assert report is not None and report.taken == len(entries)
    assert report.dead == damaged and report.failed == 0
    assert report.read + report.cached == len(entries) - damaged
    queue = RedisRecollectQueue.for_store(bot_store)
    assert queue.stats().backlog == 0
    letters = queue.dead(100)
    assert {(d.fields["session"], d.fields["page"]) for d in letters} == {("bad", "0")}
    assert all("unreadable page record" in d.reason for d in letters)


def test_a_worker_makes_the_group_again_when_the_stream_is_gone(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    """A Redis restarted without persistence, or an operator's DEL of the stream, takes
    the consumer group away under a running worker; bots then queue onto a new stream
    with no group. The worker makes the group again instead of failing every step with
    NOGROUP while the backlog grows."""
    bot_store, worker_store = stores
    worker = RecollectWorker(worker_store, Digest(), batch_size=100)
    assert worker.step() is None  # the group is made
    bot_store._sync().delete(stream_key(TENANT))
    mem = bot(bot_store)
    mem.add_many("s", talk(16))
    report = worker.step()
    assert report is not None and report.read > 0
    assert mem.flush(5)


def test_the_queue_is_no_session_and_outlives_every_session(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    """The streams share the tenant's hash tag but are not session keys: sessions() does
    not list them, and deleting sessions leaves them and their group alone."""
    bot_store, worker_store = stores
    mem = bot(bot_store)
    mem.add_many("s", talk(12))
    bot_store._sync().xadd(stream_key(TENANT), {"not": "ours"})
    with RecollectWorker(worker_store, Digest(), consumer="w") as worker:
        assert worker.step() is not None
    mem.add_many("t", talk(12))
    queue = RedisRecollectQueue.for_store(bot_store)
    before = queue.stats()
    assert before.waiting > 0 and before.dead == 1
    assert sorted(bot_store.sessions()) == ["s", "t"]
    for session in ("s", "t"):
        mem.delete_session(session)
    assert list(bot_store.sessions()) == []
    assert queue.stats() == before
    report = RecollectWorker(worker_store, Digest()).step()
    assert report is not None and report.stale == before.waiting


def test_ctrl_c_in_a_terminal_leaves_the_drawing_processes_to_the_worker() -> None:
    """Ctrl-C reaches the whole foreground process group: the drawing processes must not
    die of it (tracebacks, a broken pool mid-batch) — the worker stops them itself,
    after the batch in hand."""
    from opticmem.recollect_worker import DrawPool

    pool = DrawPool(1)
    try:
        assert list(pool.map(abs, [-1])) == [1]
        inner = pool._pool
        for pid in list(inner._processes or ()):
            os.kill(pid, signal.SIGINT)
        time.sleep(0.2)
        assert list(pool.map(abs, [-2, 3])) == [2, 3]
        assert pool._pool is inner  # not broken, not replaced
    finally:
        pool.shutdown()


def test_ctrl_c_while_the_worker_loads_its_codec_still_prints_one_json_object(
    redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import opticmem.worker_commands as commands

    def interrupted(*args: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "_load_codec", interrupted)
    result = CliRunner().invoke(app, ["worker", f"{redis_url}?tenant={TENANT}", "--json"])
    assert result.exit_code == 128 + signal.SIGINT
    assert "interrupted" in json.loads(result.stdout)["error"]


def test_a_worker_run_once_gives_up_on_a_redis_that_stays_away(
    server_factory: Any, redis_url: str,
) -> None:
    """``--once`` is for jobs (cron, a drain before a deploy): if Redis stays away it must
    end with an error, not retry for ever like a long-running worker."""
    server = server_factory()
    store = RedisStore.from_url(server.url, tenant=TENANT, retries=0)
    try:
        worker = RecollectWorker(store, Digest())
        worker.once_patience = 0.5
        server.kill()
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            worker.run(once=True)
        assert time.monotonic() - t0 < 5
    finally:
        store.close()


def test_an_idle_worker_waits_no_longer_than_its_socket_timeout_allows(
    redis_url: str, stores: tuple[RedisStore, RedisStore],
) -> None:
    """A worker on the bots' store URL with a short ``socket_timeout`` (bots that must not
    hang) waits for new entries within it: an idle queue is an empty step, not a timeout
    error that makes the loop back off (up to 30 s) and log a warning each time."""
    bot_store, _ = stores
    store = RedisStore.from_store_url(f"{redis_url}?tenant={TENANT}&socket_timeout=0.3")
    try:
        worker = RecollectWorker(store, Digest())
        t0 = time.monotonic()
        assert worker.step(block=2.0) is None
        assert time.monotonic() - t0 < 1.5
        mem = bot(bot_store)
        mem.add_many("ann", talk(24))
        mem.context("ann")
        report = worker.step(block=2.0)
        assert report is not None and report.read > 0
    finally:
        store.close()


def test_a_worker_refuses_a_queue_of_another_tenant_than_its_store(
    redis_url: str, stores: tuple[RedisStore, RedisStore],
) -> None:
    """Entries name sessions of their queue's tenant: a worker that looked them up in
    another tenant's store would acknowledge every one as gone, and that tenant's pages
    would never be read by any worker."""
    bot_store, _ = stores
    mem = bot(bot_store)
    mem.add_many("ann", talk(24))
    mem.context("ann")
    queue = RedisRecollectQueue.for_store(bot_store)
    waiting = queue.stats().waiting
    assert waiting > 0
    other = RedisStore.from_url(redis_url, tenant="other")
    try:
        with pytest.raises(ConfigurationError, match=r"tenant 'acme'.*tenant 'other'"):
            RecollectWorker(other, Digest(), queue=queue)
    finally:
        other.close()
    assert queue.stats().waiting == waiting  # nothing taken, nothing acknowledged


def test_a_queue_opened_from_the_bots_store_url_serves_its_tenant(
    redis_url: str, stores: tuple[RedisStore, RedisStore],
) -> None:
    """The store URL every bot and worker is given (``?tenant=…&ttl=…``) opens the queue
    of that tenant: not the default tenant's queue, failing its first call with a bare
    TypeError about a connection argument."""
    bot_store, _ = stores
    mem = bot(bot_store)
    mem.add_many("ann", talk(24))
    mem.context("ann")
    waiting = RedisRecollectQueue.for_store(bot_store).stats().waiting
    assert waiting > 0
    queue = RedisRecollectQueue.from_url(f"{redis_url}?tenant={TENANT}&ttl=86400")
    try:
        assert queue.tenant == TENANT and queue.key == stream_key(TENANT)
        assert queue.stats().waiting == waiting
    finally:
        queue.client.close()
    plain = RedisRecollectQueue.from_url(redis_url, tenant=TENANT)  # as before
    assert plain.stats().waiting == waiting
    plain.client.close()
    with pytest.raises(StoreURLError, match="conflicts"):
        RedisRecollectQueue.from_url(f"{redis_url}?tenant={TENANT}", tenant="other")
    with pytest.raises(StoreURLError, match="ttl"):
        RedisRecollectQueue.from_url(f"{redis_url}?tenant={TENANT}&ttl=soon")


def test_the_queue_command_gives_a_dead_letters_page_as_a_number(
    stores: tuple[RedisStore, RedisStore], redis_url: str,
) -> None:
    """``queue --json`` gave a dead letter's page as the stream's text ("0"), where every
    other page number the commands print is a JSON number."""
    bot_store, worker_store = stores
    mem = bot(bot_store, codec=Digest("another-model"))
    mem.add_many("s", talk(12))
    bot_store._sync().xadd(stream_key(TENANT), {"page": "x1"})  # not a bot's entry
    report = RecollectWorker(worker_store, Digest(), batch_size=100).step()
    assert report is not None and report.dead > 1
    status = CliRunner().invoke(app, ["queue", f"{redis_url}?tenant={TENANT}", "--json",
                                      "--dead", "100"])
    assert status.exit_code == 0, status.output
    pages = [d["page"] for d in json.loads(status.stdout)["dead_letters"]]
    assert "x1" in pages  # kept as it was
    numbers = [p for p in pages if p != "x1"]
    assert numbers and all(isinstance(p, int) for p in numbers)
    assert set(numbers) <= {p.page_no for p in mem.pages("s")}


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("claim_idle", float("inf"), "claim_idle must be positive seconds, at most 1e"),
    ("claim_idle", 1e20, "claim_idle must be positive seconds"),
    ("claim_idle", float("nan"), "claim_idle must be positive seconds"),
    ("forget_idle", 0.0, "forget_idle must be positive seconds"),
    ("batch_size", 10**20, "batch_size must be at most 1,000,000"),
    ("batch_size", 0, "batch_size must be a whole number"),
])
def test_a_worker_refuses_settings_redis_cannot_take(
    stores: tuple[RedisStore, RedisStore], setting: str, value: object, message: str,
) -> None:
    """A claim_idle of 1e20 seconds or a batch of 1e20 pages is past what XAUTOCLAIM
    takes: every step failed in Redis and was retried for ever, reading nothing (``inf``
    ended in an OverflowError). Refused where the worker is made, as the CLI refuses them."""
    with pytest.raises(ConfigurationError, match=message):
        RecollectWorker(stores[1], Digest(), **{setting: value})  # type: ignore[arg-type]
    assert RecollectWorker(stores[1], Digest(), claim_idle=MAX_CLAIM_IDLE,
                           batch_size=MAX_BATCH_SIZE).step() is None  # the bounds work


def _connections(raw: redis.Redis) -> set[int]:
    """Ids of the server's client connections, less ``raw``'s own."""
    own = int(raw.client_id())
    return {int(c["id"]) for c in raw.client_list()} - {own}


def test_a_queue_from_a_url_closes_the_connections_it_opened(redis_url: str) -> None:
    """``from_url`` opened a store whose connections nothing closed: each queue made from
    a URL (a dashboard polling the backlog) left one open on the server for good."""
    with redis.Redis.from_url(redis_url) as raw:
        before = _connections(raw)
        queue = RedisRecollectQueue.from_url(f"{redis_url}?tenant={TENANT}")
        assert queue.stats().backlog == 0
        assert len(_connections(raw) - before) == 1  # the queue's connection
        queue.close()
        assert _connections(raw) == before  # released
        with pytest.raises(StoreError, match="is closed"):
            queue.stats()
        with pytest.raises(StoreError, match="is closed"):
            queue.submit("s", [Job(page_record(), Tier.LARGE)], codec="", settings=SMALL)
        assert _connections(raw) == before  # a closed queue opens none again
        queue.close()  # again: nothing to do

        with RedisRecollectQueue.from_url(redis_url, tenant=TENANT) as queue:
            queue.ensure_group()
            assert queue.stats().consumers == 0
            assert len(_connections(raw) - before) == 1
        assert queue.closed and _connections(raw) == before


def test_a_queue_leaves_a_store_it_was_given_open_and_closes_with_it(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url, tenant=TENANT)
    queue = RedisRecollectQueue.for_store(store)
    with queue:
        assert queue.stats().backlog == 0
    assert store.turn_count("s") == 0  # the store is the caller's: still open
    other = RedisRecollectQueue.for_store(store)
    store.close()
    assert other.closed
    with pytest.raises(StoreError, match="is closed"):
        other.stats()  # not reconnected through the closed store's pool
    client = redis.Redis.from_url(redis_url)
    given = RedisRecollectQueue(client, tenant=TENANT)
    given.close()
    assert client.ping()  # a client passed in is the caller's too
    client.close()


def page_record() -> Any:
    from opticmem.records import PageRecord

    return PageRecord(session="s", page_no=0, first_seq=0, first_line=0, last_seq=0,
                      end_line=1, transcript="p", text_tokens=1, first_ts=0.0, last_ts=0.0,
                      render_key="r")


@pytest.mark.parametrize("bad", [
    {b"session": b"x" * 70_000},  # more than the store takes as an id
    {b"session": b""},  # no session a bot can have
    {b"session": b"a\nb"},  # nor a control character in its id
    {b"page": str(2**64).encode()},  # past Redis's list indexes
])
def test_an_entry_no_bot_could_queue_is_buried_alone(
    stores: tuple[RedisStore, RedisStore], bad: dict[bytes, bytes],
) -> None:
    """An entry naming a session id or page number no bot can have (anything may write
    to the stream) failed the whole batch's page lookup — InvalidSessionError, or Redis
    refusing the index — so every step failed, and the good entries sharing its batch
    were delivered again and again until they were buried with it as undeliverable."""
    bot_store, worker_store = stores
    mem = bot(bot_store)
    mem.add_many("s", talk(12))
    raw = bot_store._sync()
    good = raw.xrange(stream_key(TENANT))
    assert good
    raw.xadd(stream_key(TENANT), {**good[0][1], **bad})
    report = RecollectWorker(worker_store, Digest(), batch_size=100).step()
    assert report is not None and report.dead == 1 and report.failed == 0
    assert report.read + report.cached == len(good)
    queue = RedisRecollectQueue.for_store(bot_store)
    assert queue.stats().backlog == 0
    [letter] = queue.dead(10)
    assert "unreadable recollection queue entry" in letter.reason
    mem.close()
