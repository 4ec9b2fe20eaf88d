"""``opticmem worker`` and ``opticmem queue``: read queued pages, and look at the queue.

Bots made with ``OpticalMemory("redis://…", recollect="queue")`` put the pages they seal
and show on a Redis Stream (:mod:`opticmem.recollect_queue`); ``opticmem worker`` reads
them on a GPU machine (:mod:`opticmem.recollect_worker`) until stopped (Ctrl-C or
SIGTERM finish the batch in hand first). ``opticmem queue`` prints the backlog, the
workers and the newest dead letters.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import unicodedata
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from opticmem.errors import OpticMemError, StoreError
from opticmem.recollect_limits import MAX_BATCH_SIZE, MAX_CLAIM_IDLE
from opticmem.stores import redact_url

UrlArg = Annotated[str, typer.Argument(help="The bots' Redis store URL (redis://…, with "
                                            "?tenant=… if they use one).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")]


def register(app: typer.Typer) -> None:
    """Add ``worker`` and ``queue`` to the opticmem CLI."""
    app.command("worker")(worker_command)
    app.command("queue")(queue_command)


def _open_store(url: str, as_json: bool) -> Any:
    from opticmem.cli import bad_store_url, fail

    if not url.lower().startswith(("redis://", "rediss://", "unix://")):  # as open_store
        raise fail(f"the queue lives in Redis: give the bots' redis:// URL, not "
                   f"{redact_url(url)!r}", as_json, code=2)
    try:
        from opticmem.redis_store import RedisStore

        return RedisStore.from_store_url(url)
    except ImportError as exc:
        raise fail(str(exc), as_json) from exc
    except (OpticMemError, ValueError) as exc:
        # a URL refused as written is a usage error, as a URL of another scheme is
        raise fail(str(exc), as_json, code=2 if bad_store_url(exc) else 1) from exc


def worker_command(
    url: UrlArg,
    codec: Annotated[str, typer.Option(
        help="bundled, random (a tiny untrained model, for trying the plumbing) or a "
             "checkpoint directory: the codec the bots read with.")] = "bundled",
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: best)")] = None,
    batch_size: Annotated[int, typer.Option(
        min=1, max=MAX_BATCH_SIZE, help="Pages per batch.")] = 32,
    max_tokens: Annotated[int | None, typer.Option(
        min=1, help="Cap on tokens read per page (default: the codec's).")] = None,
    claim_idle: Annotated[float, typer.Option(
        min=0.01, max=MAX_CLAIM_IDLE,
        help="Seconds before another worker's unfinished pages are taken over.")] = 300.0,
    max_deliveries: Annotated[int, typer.Option(
        min=1, help="Tries per page before it goes to the dead letters.")] = 5,
    forget_idle: Annotated[float, typer.Option(
        min=0.01, max=MAX_CLAIM_IDLE,
        help="Seconds after which a silent worker holding no pages (a killed one) is "
             "taken out of the group.")] = 3600.0,
    draw_workers: Annotated[int | None, typer.Option(
        min=0, help="Processes drawing page images (default: up to 8 on CUDA, 0 on CPU, "
                    "where drawing would compete with the model).")] = None,
    consumer: Annotated[str | None, typer.Option(
        help="This worker's name in the group (default host-pid).")] = None,
    once: Annotated[bool, typer.Option(
        help="Stop when the queue has nothing more for this worker (or, exit 1, when "
             "Redis has been away for a minute).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Read back the pages bots queued (recollect="queue"), in batches across sessions."""
    from opticmem.cli import err, fail, report
    from opticmem.codec_commands import _bad_option

    if consumer is not None and not consumer.strip():
        # an empty name fell back to the default one without a word
        raise _bad_option("the consumer name is empty: leave --consumer out for host-pid",
                          "--consumer", as_json)
    for i, ch in enumerate(consumer or ""):
        # the name goes to Redis (XINFO CONSUMERS) and into the worker's log lines, where
        # a newline forges a line of its own; a lone surrogate (bytes of the command line
        # that are not UTF-8) failed only at Redis, with UnicodeEncodeError
        kind = ("control character" if unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029"
                else "a lone surrogate" if unicodedata.category(ch) == "Cs" else None)
        if kind:
            raise _bad_option(f"the consumer name has {kind} U+{ord(ch):04X} at index {i}",
                              "--consumer", as_json)
    if codec not in ("bundled", "random") and not Path(codec).is_dir():
        # a usage error (exit 2) as with eval, before Redis is reached or a model loaded
        raise _bad_option(f"{codec!r} is not bundled, random or a checkpoint directory",
                          "--codec", as_json)
    store = _open_store(url, as_json)  # first: it says which extra a base install lacks
    from opticmem.recollect_worker import BatchReport, RecollectWorker  # imports redis

    try:
        try:
            model = _load_codec(codec, device, as_json)
        except KeyboardInterrupt:  # before the worker's own handling of Ctrl-C
            raise fail("interrupted while loading the codec", as_json,
                       code=128 + signal.SIGINT) from None
        if hasattr(model, "batch_size"):
            model.batch_size = batch_size
        if draw_workers is None:
            on_gpu = str(getattr(model, "device", "cpu")).startswith("cuda")
            draw_workers = min(8, max(1, (os.cpu_count() or 2) - 2)) if on_gpu else 0
        worker = RecollectWorker(store, model, consumer=consumer, batch_size=batch_size,
                                 max_deliveries=max_deliveries, claim_idle=claim_idle,
                                 forget_idle=forget_idle,
                                 decode_max_tokens=max_tokens, draw_workers=draw_workers)
        if not as_json:
            err.print(f"worker {worker.consumer}: codec {model.name}, queue {worker.queue.key} "
                      f"at {store.url}" + ("" if once else "; Ctrl-C stops it"))

        def show(r: BatchReport) -> None:
            if not as_json:
                tiers = ", ".join(f"{n} {t}" for t, n in sorted(r.tiers.items()))
                err.print(f"read {r.read} pages ({tiers or 'none'}; {r.cached} already read, "
                          f"{r.stale} gone, {r.dead} dead, {r.failed} failed) in "
                          f"{r.seconds:.2f}s")

        stop = threading.Event()
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if stop.is_set():  # a second one: the batch in hand is taking too long
                raise _StopNow(signum)
            stop.set()
            if not as_json:
                err.print("stopping after the batch in hand (a second signal stops at once)")

        if threading.current_thread() is threading.main_thread():
            for s in previous:
                signal.signal(s, on_signal)
        t0 = time.perf_counter()
        try:
            with worker:
                totals = worker.run(stop=stop, once=once, on_batch=show)
        except _StopNow as now:
            raise fail(f"stopped at once by a second {signal.Signals(now.signum).name}; the "
                       f"pages this worker held go to another worker after --claim-idle "
                       f"({claim_idle:g} s)", as_json, code=128 + now.signum) from None
        finally:
            if threading.current_thread() is threading.main_thread():
                for s, handler in previous.items():
                    signal.signal(s, handler)
        summary = {"command": "worker", "consumer": worker.consumer, "codec": model.name,
                   "batches": totals.batches, "read": totals.read, "cached": totals.cached,
                   "stale": totals.stale, "dead": totals.dead, "failed": totals.failed,
                   "seconds": round(time.perf_counter() - t0, 3)}
        if as_json:
            report(summary, True)
        else:
            err.print(f"stopped: {totals.read} pages read in {totals.batches} batches")
    except OpticMemError as exc:  # --once gave up on Redis (a long-running worker never does)
        raise fail(str(exc), as_json) from exc
    finally:
        store.close()


class _StopNow(BaseException):
    """Raised by a second SIGINT/SIGTERM out of whatever the worker is doing. A
    BaseException, so that no ``except Exception`` on the way takes it for a failure
    of the batch and carries on."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _load_codec(choice: str, device: str | None, as_json: bool) -> Any:
    from opticmem.cli import check_device, fail

    try:
        from opticmem.encoder.bundled import load_bundled_codec
        from opticmem.encoder.codec import CodecError
        from opticmem.encoder.ocr import OCRCodec
    except ImportError as exc:
        raise fail(f"this installation has no encoder: {exc}", as_json) from exc
    check_device(device, as_json)
    try:
        if choice == "random":
            return OCRCodec.random("test", seed=0, device=device)
        return load_bundled_codec(None if choice == "bundled" else Path(choice), device=device)
    except (CodecError, OSError) as exc:
        raise fail(f"--codec {choice}: {exc}", as_json) from exc
    except RuntimeError as exc:  # torch: out of memory on the device, a broken driver
        raise fail(f"--codec {choice} on {device or 'the default device'}: {exc}",
                   as_json) from exc


def _page_no(field: str | None) -> int | str | None:
    """A dead letter's page number as the number it is (the stream holds text), as every
    other page number in the commands' JSON is; an entry not written by a bot (anything
    may write to the stream) keeps whatever it held there."""
    return int(field) if field is not None and field.isascii() and field.isdigit() else field


def queue_command(
    url: UrlArg,
    dead: Annotated[int, typer.Option(min=0, help="Newest dead letters to show.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Show the recollection queue: backlog, workers, the newest dead letters."""
    from opticmem.cli import fail, out, report

    store = _open_store(url, as_json)  # first: it says which extra a base install lacks
    from opticmem.recollect_queue import RedisRecollectQueue  # imports redis

    try:
        queue = RedisRecollectQueue.for_store(store)
        stats = queue.stats()
        letters = queue.dead(dead) if dead else []
    except StoreError as exc:
        raise fail(str(exc), as_json) from exc
    finally:
        store.close()
    if as_json:
        report({"command": "queue", "key": queue.key, "waiting": stats.waiting,
                "taken": stats.taken, "dead": stats.dead, "workers": stats.consumers,
                "dead_letters": [{"entry": d.entry, "session": d.fields.get("session"),
                                  "page": _page_no(d.fields.get("page")),
                                  "tier": d.fields.get("tier"),
                                  "reason": d.reason, "deliveries": d.deliveries}
                                 for d in letters]}, True)
        return
    out.print(f"{queue.key}: {stats.waiting} waiting, {stats.taken} taken by workers, "
              f"{stats.dead} dead; {stats.consumers} worker(s) in the group")
    for d in letters:
        out.print(f"  dead {d.entry}: session {d.fields.get('session')!r} page "
                  f"{d.fields.get('page')} at {d.fields.get('tier')}: {d.reason}")
