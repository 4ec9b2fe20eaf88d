"""Derived artefacts of sealed pages: images per tier, vision tokens, recollected text.

All are recomputable from the page record (and the codec), so they live in the store's
blob cache under keys that name everything they depend on:

* ``png/{tier}/{page}`` — the page image at a tier (the Large master drawn once from
  the record's transcript, resampled, PNG-encoded with fixed settings);
* ``vt/{codec}/{tier}/{page}`` — the codec's vision tokens for that image;
* ``rec/{codec}/{tier}/{page}`` — what the codec read back (text + confidence), JSON;
  ``{codec}`` names the cap on tokens read per page too, when there is one
  (:func:`reading_name`).

``{page}`` is ``page_no.first_seq.first_line.render_key``: the render settings are part
of every key. Work is batched: one store call looks up the artefacts of a set of pages
(of any sessions) and one keeps what was made, one ``encode`` call per tier, one
``decode`` call for all missing recollections. Each page is therefore decoded once per
tier it reaches, per codec (and cap).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TypeVar

import numpy as np
from PIL import Image

from opticmem.codecs import CodecSlot
from opticmem.encoder.codec import (
    CodecError,
    Recollection,
    VisionTokens,
    VisionTokensFormatError,
)
from opticmem.errors import CodecUnavailableError, CorruptRecordError
from opticmem.lru import LRU
from opticmem.records import PageRecord
from opticmem.render import ORDER, PageLayout, RenderSettings, Tier, draw_page, png_bytes, to_tier
from opticmem.store import Store

log = logging.getLogger(__name__)


def page_id(page: PageRecord) -> str:
    """The cache identity of a sealed page within its session."""
    return f"{page.page_no}.{page.first_seq}.{page.first_line}.{page.render_key}"


def png_key(page: PageRecord, tier: Tier) -> str:
    return f"png/{tier.value}/{page_id(page)}"


def vt_key(codec: str, page: PageRecord, tier: Tier) -> str:
    return f"vt/{codec}/{tier.value}/{page_id(page)}"


def rec_key(codec: str, page: PageRecord, tier: Tier) -> str:
    """The key of a page's reading at ``tier``; ``codec`` is :func:`reading_name`'s."""
    return f"rec/{codec}/{tier.value}/{page_id(page)}"


def reading_name(codec: str, max_tokens: int | None) -> str:
    """What a codec's readings are cached under: its name, and the cap on tokens read per
    page when there is one (``decode_max_tokens``). A reading cut short by a cap is
    another reading of the page: cached under the name alone, it was served to every
    memory on the store without that cap (or with another) as if read in full."""
    return codec if max_tokens is None else f"{codec}~max{max_tokens}"


def recollection_to_bytes(rec: Recollection) -> bytes:
    return json.dumps(
        # float()/int(): a codec scoring with NumPy gives np.float32 and np.int64
        {"text": rec.text, "tier": rec.tier.value, "confidence": float(rec.confidence),
         "tokens": int(rec.tokens), "seconds": float(rec.seconds), "codec": rec.codec},
        ensure_ascii=False, separators=(",", ":"),
    ).encode("utf-8")


def recollection_from_bytes(data: bytes, where: str) -> Recollection:
    try:
        d = json.loads(data)
        return Recollection(text=str(d["text"]), tier=Tier.parse(d["tier"]),
                            confidence=float(d["confidence"]), tokens=int(d["tokens"]),
                            seconds=float(d.get("seconds", 0.0)), codec=str(d.get("codec", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptRecordError(f"unreadable recollection {where}: {exc}") from exc


T = TypeVar("T")


def _or_remade(parse: Callable[[bytes], T], data: bytes | None, key: str) -> T | None:
    """A cached artefact parsed, or ``None`` — made again, and cached over it — when it is
    absent or unreadable (written by a damaged store, or a version that wrote it another
    way). Artefacts are a cache, recomputable from the page record: an unreadable one
    failed every recall and context of its session for good."""
    if data is None:
        return None
    try:
        return parse(data)
    except (CorruptRecordError, VisionTokensFormatError) as exc:
        log.warning("cached artefact %s is unreadable (%s); making it again", key, exc)
        return None


def draw_master(transcript: str, settings: RenderSettings) -> np.ndarray:
    """A page's Large master, drawn from its transcript (its lines as packed)."""
    layout = PageLayout(lines=tuple(transcript.split("\n")), sources=(), settings=settings,
                        complete=True)
    return draw_page(layout)


def draw_tier_png(
    transcript: str, settings: RenderSettings, tier: Tier
) -> tuple[bytes, np.ndarray]:
    """A page at ``tier``: its PNG and its pixels. A plain function of its arguments, so a
    process pool can run it (a worker draws pages in parallel: ``Artefacts.draw_pool``)."""
    image = to_tier(draw_master(transcript, settings), tier)
    return png_bytes(image), np.asarray(image)


@dataclass(frozen=True, slots=True)
class Job:
    """One page at one tier."""

    page: PageRecord
    tier: Tier


Item = tuple[str, Job]
"""A page of some session at some tier: ``(session, job)``."""


def _check_made(codec: str, what: str, made: object, asked: int, kind: type) -> None:
    """Raise :class:`CodecError` unless the codec's ``encode`` or ``decode`` (``what``)
    gave a list of one ``kind`` per page it was asked for. Its results are matched to the
    pages by position, so a codec that drops or adds one would otherwise fail later with a
    bare ``zip()`` error (or an ``AttributeError`` for a plain string) that names neither
    the codec nor the call."""
    got = type(made).__name__
    if isinstance(made, (list, tuple)):
        if len(made) == asked and all(isinstance(m, kind) for m in made):
            return
        kinds = sorted({type(m).__name__ for m in made})
        got = f"{len(made)} items" + (f" of {', '.join(kinds)}" if kinds else "")
    raise CodecError(
        f"codec {codec!r}: {what}() was given {asked} pages and returned {got}; it must "
        f"return a list with one {kind.__name__} per page, in the order given")


def _check_readings(codec: str, recs: Sequence[Recollection], tiers: Sequence[Tier]) -> None:
    """Raise :class:`CodecError` unless each reading holds what a reading must: text as a
    ``str``, the tier it was asked for, a number for its confidence and a whole number of
    tokens. Readings are cached as they come: one with text of ``None`` was kept as the
    text ``"None"``, and one with a confidence of ``"high"`` made every later recall of
    its session fail (``CorruptRecordError``) for good; bytes or a tier by name failed
    with a bare ``TypeError`` or ``AttributeError``."""
    for n, (rec, tier) in enumerate(zip(recs, tiers, strict=True)):
        problem = None
        if not isinstance(rec.text, str):
            problem = f"text is {type(rec.text).__name__}, not str"
        elif rec.tier is not tier:
            problem = f"tier is {rec.tier!r}, not the {tier!r} it was asked to read"
        elif isinstance(rec.confidence, bool) or not isinstance(rec.confidence, Real):
            problem = f"confidence is {type(rec.confidence).__name__}, not a number"
        elif isinstance(rec.tokens, bool) or not isinstance(rec.tokens, Integral):
            problem = f"tokens is {type(rec.tokens).__name__}, not a whole number"
        elif isinstance(rec.seconds, bool) or not isinstance(rec.seconds, Real):
            problem = f"seconds is {type(rec.seconds).__name__}, not a number"
        elif not isinstance(rec.codec, str):
            problem = f"codec is {type(rec.codec).__name__}, not str"
        if problem is not None:
            raise CodecError(f"codec {codec!r}: decode() gave a reading (item {n}) whose "
                             f"{problem}; nothing of its batch was kept")


class Artefacts:
    """Renders, encodes and decodes pages through the store's blob cache."""

    def __init__(
        self,
        store: Store,
        settings: RenderSettings,
        codec: CodecSlot,
        *,
        decode_max_tokens: int | None = None,
        masters: int = 8,
        on_recollected: Callable[[str, int], None] | None = None,
        draw_pool: Executor | None = None,
    ) -> None:
        self.store = store
        self.codec = codec
        self.decode_max_tokens = decode_max_tokens
        self._settings: dict[str, RenderSettings] = {settings.key(): settings}
        self._masters: LRU[tuple[str, str], np.ndarray] = LRU(masters)
        """Large masters keyed by what they are drawn from (render key, transcript), not by
        page number: a session deleted (or expired) and begun again reuses page numbers."""
        self._on_recollected = on_recollected
        self.draw_pool = draw_pool
        """Processes that draw missing page images in parallel (``None``: drawn here)."""

    # ------------------------------------------------------------------ images
    def know_settings(self, settings: RenderSettings) -> None:
        """Also draw pages packed with ``settings`` (a worker reads many memories' pages)."""
        self._settings.setdefault(settings.key(), settings)

    def settings_for(self, page: PageRecord) -> RenderSettings:
        s = self._settings.get(page.render_key)
        if s is None:
            known = ", ".join(self._settings)
            raise CorruptRecordError(
                f"session {page.session!r} page {page.page_no} was packed with render settings "
                f"{page.render_key}; this memory knows {known}. Open the memory with the "
                "render_settings the session was written with."
            )
        return s

    def master(self, page: PageRecord) -> np.ndarray:
        """The Large master of ``page`` (drawn from its transcript; cached in-process)."""
        key = (page.render_key, page.transcript)
        settings = self.settings_for(page)
        return self._masters.get_or_compute(key, lambda: draw_master(page.transcript, settings))

    def _tier_images_of(self, items: Sequence[Item]) -> list[tuple[bytes, Image.Image | None]]:
        """Each page's PNG at its tier — from the cache, else drawn and cached — with the
        image itself when it was drawn here (so it need not be decoded from the PNG).
        Missing pages of all sessions are drawn together (in parallel with a pool)."""
        keys = [png_key(j.page, j.tier) for _, j in items]
        found = self._blobs_of(items, keys)
        out: list[tuple[bytes, Image.Image | None]] = [(d or b"", None) for d in found]
        missing = [i for i, d in enumerate(found) if d is None]
        todo = [items[i][1] for i in missing]
        drawn = self._drawn_in_pool(todo) if len(todo) > 1 else None
        if drawn is None:
            drawn = []
            for j in todo:
                image = to_tier(self.master(j.page), j.tier)
                drawn.append((png_bytes(image), image))
        for i, (png, image) in zip(missing, drawn, strict=True):
            out[i] = (png, image)
        self._cache([(items[i][1].page, keys[i], out[i][0]) for i in missing])
        return out

    def _drawn_in_pool(self, todo: Sequence[Job]) -> list[tuple[bytes, Image.Image]] | None:
        """``todo`` drawn by :attr:`draw_pool`; ``None`` if there is none or it failed.

        The pool only makes drawing faster, so when it fails — shut down, broken (one of
        its processes died), its work cancelled — the pages are drawn here instead (the
        same pixels). A page whose drawing itself fails fails again here, and says why.
        """
        pool = self.draw_pool
        if pool is None:
            return None
        settings = [self.settings_for(j.page) for j in todo]
        try:
            return [(png, Image.fromarray(pixels)) for png, pixels in pool.map(
                draw_tier_png, [j.page.transcript for j in todo], settings,
                [j.tier for j in todo])]
        except Exception as exc:  # BrokenExecutor, CancelledError, RuntimeError, ...
            log.warning("drawing %d pages in the process pool failed (%s: %s); drawing "
                        "them here", len(todo), type(exc).__name__, exc)
            return None

    def pngs(self, session: str, jobs: Sequence[Job]) -> list[bytes]:
        """PNG bytes of each page at its tier, rendering (and caching) what is missing."""
        return [png for png, _ in self._tier_images_of([(session, j) for j in jobs])]

    def images(self, session: str, jobs: Sequence[Job]) -> list[Image.Image]:
        """Page images (mode ``L``, ``tier.pixels`` square)."""
        return self.images_of([(session, j) for j in jobs])

    def images_of(self, items: Sequence[Item]) -> list[Image.Image]:
        """:meth:`images` for pages of any sessions."""
        return [image if image is not None else Image.open(io.BytesIO(png))
                for png, image in self._tier_images_of(items)]

    # ------------------------------------------------------------------ codec
    def readings_name(self, codec: str) -> str:
        """What ``codec``'s readings by this memory are cached under: :func:`reading_name`
        with its :attr:`decode_max_tokens`."""
        return reading_name(codec, self.decode_max_tokens)

    def _require_codec(self) -> str:
        codec = self.codec.get()
        if codec is None:
            raise CodecUnavailableError(
                f"this memory has no codec ({self.codec.status}); vision tokens and "
                "recollections need one"
            )
        return codec.name

    def _cache(self, blobs: Sequence[tuple[PageRecord, str, bytes]]) -> None:
        """Keep artefacts ``(page, key, data)`` (one store call) — each unless its session
        no longer holds its page (deleted, expired or begun again while it was drawn or
        read): the caller still gets what it asked for, but nothing is written into
        that session."""
        if not blobs:
            return
        for (page, key, _), kept in zip(blobs, self.store.put_page_blobs(blobs), strict=True):
            if not kept:
                log.debug("session %r no longer holds page %d as it was; %s not cached",
                          page.session, page.page_no, key)

    def _blobs_of(self, items: Sequence[Item], keys: Sequence[str]) -> list[bytes | None]:
        """``keys[i]`` of ``items[i]``'s session, in one store call."""
        return self.store.get_blobs_of([(s, k) for (s, _), k in zip(items, keys, strict=True)])

    def vision_tokens(self, session: str, jobs: Sequence[Job]) -> list[VisionTokens]:
        """Vision tokens per job: cached, else encoded in one batch per tier."""
        return self.vision_tokens_of([(session, j) for j in jobs])

    def vision_tokens_of(self, items: Sequence[Item]) -> list[VisionTokens]:
        """:meth:`vision_tokens` for pages of any sessions: one encode call per tier."""
        name = self._require_codec()
        keys = [vt_key(name, j.page, j.tier) for _, j in items]
        out: list[VisionTokens | None] = [
            _or_remade(VisionTokens.from_bytes, data, key)
            for data, key in zip(self._blobs_of(items, keys), keys, strict=True)
        ]
        by_tier: dict[Tier, list[int]] = {}
        for i, v in enumerate(out):
            if v is None:
                by_tier.setdefault(items[i][1].tier, []).append(i)
        for tier, idx in by_tier.items():
            images = self.images_of([items[i] for i in idx])
            codec = self.codec.get()
            assert codec is not None  # checked by _require_codec
            t0 = time.perf_counter()
            with self.codec.lock:
                made = codec.encode(images, tier)
            _check_made(name, "encode", made, len(idx), VisionTokens)
            log.debug("encoded %d pages at %s in %.2fs", len(idx), tier.value,
                      time.perf_counter() - t0)
            for i, vt in zip(idx, made, strict=True):
                out[i] = vt
            self._cache([(items[i][1].page, keys[i], vt.to_bytes())
                         for i, vt in zip(idx, made, strict=True)])
        return [v for v in out if v is not None]

    def cached_recollections(self, session: str, jobs: Sequence[Job]) -> list[Recollection | None]:
        """Recollections already in the cache (no model work); ``None`` where absent or
        when the memory has no codec."""
        return self.cached_recollections_of([(session, j) for j in jobs])

    def cached_recollections_of(self, items: Sequence[Item]) -> list[Recollection | None]:
        """:meth:`cached_recollections` for pages of any sessions."""
        codec = self.codec.get()
        if codec is None or not items:
            return [None] * len(items)
        name = self.readings_name(codec.name)
        keys = [rec_key(name, j.page, j.tier) for _, j in items]
        return [
            _or_remade(functools.partial(recollection_from_bytes, where=k), d, k)
            for d, k in zip(self._blobs_of(items, keys), keys, strict=True)
        ]

    def newest_cached_readings(
        self, session: str, codec: str, pages: Sequence[PageRecord], tiers: Sequence[Tier],
    ) -> list[Recollection | None]:
        """Each page's most decayed reading cached under ``codec`` (a :func:`reading_name`)
        not beyond its tier in ``tiers``: what recall indexes, in one store call and with
        no model work. ``None`` where there is none; an unreadable one is passed over as
        absent (:func:`_or_remade`: the next read of the page at that tier makes it again)."""
        keys = [rec_key(codec, p, t) for p in pages for t in ORDER]
        found = self.store.get_blobs(session, keys)
        out: list[Recollection | None] = []
        for i, tier in enumerate(tiers):
            rec = None
            first = i * len(ORDER)  # the page's reading at Large
            for n in reversed(range(first, first + ORDER.index(tier) + 1)):
                rec = _or_remade(functools.partial(recollection_from_bytes, where=keys[n]),
                                 found[n], keys[n])
                if rec is not None:
                    break
            out.append(rec)
        return out

    def recollections(self, session: str, jobs: Sequence[Job]) -> list[Recollection]:
        """Recollections per job: cached, else decoded — all missing pages in one batch."""
        return self.recollections_of([(session, j) for j in jobs])

    def recollections_of(self, items: Sequence[Item]) -> list[Recollection]:
        """:meth:`recollections` for pages of any sessions, in one decode call (what a
        worker serving many sessions batches: :mod:`opticmem.recollect_worker`)."""
        name = self._require_codec()
        out = self.cached_recollections_of(items)
        missing = [i for i, r in enumerate(out) if r is None]
        if missing:
            tokens = dict(zip(missing, self.vision_tokens_of([items[i] for i in missing]),
                              strict=True))
            codec = self.codec.get()
            assert codec is not None
            with self.codec.lock:
                # Another thread (the background worker, a second caller) may have read some
                # of these while this one waited for the codec: a page read is seconds of
                # CPU, so look again. Its blobs are written before it lets the codec go.
                again = self.cached_recollections_of([items[i] for i in missing])
                for i, rec in zip(missing, again, strict=True):
                    out[i] = rec
                missing = [i for i in missing if out[i] is None]
                t0 = time.perf_counter()
                recs = (codec.decode([tokens[i] for i in missing],
                                     max_new_tokens=self.decode_max_tokens) if missing else [])
                _check_made(name, "decode", recs, len(missing), Recollection)
                _check_readings(name, recs, [items[i][1].tier for i in missing])
                log.debug("decoded %d pages in %.2fs", len(missing), time.perf_counter() - t0)
                for i, rec in zip(missing, recs, strict=True):
                    out[i] = rec
                jobs = [items[i][1] for i in missing]
                cached_as = self.readings_name(name)
                self._cache([(j.page, rec_key(cached_as, j.page, j.tier),
                              recollection_to_bytes(rec))
                             for j, rec in zip(jobs, recs, strict=True)])
            if self._on_recollected is not None:
                for i in missing:
                    self._on_recollected(items[i][0], items[i][1].page.page_no)
        return [r for r in out if r is not None]

