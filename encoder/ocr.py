"""``OCRCodec``: the DeepSeek-OCR-style model behind the codec seam (``Codec``).

It wraps an :class:`~opticmem.encoder.model.OCRModel` and a ``tokenizers.Tokenizer``.
``encode`` preprocesses page images of one tier, runs the DeepEncoder in batches and
returns each page's ``(g, g, D)`` grid as float16 numpy; ``decode`` turns grids back into
decoder slots and reads text with batched greedy decoding.

>>> from PIL import Image
>>> codec = OCRCodec.random("test", seed=0)
>>> [vt] = codec.encode([Image.new("L", (512, 512), 255)], "tiny")
>>> vt.grid.shape, vt.grid.dtype.name
((8, 8, 64), 'float16')
>>> [rec] = codec.decode([vt], max_new_tokens=4)
>>> rec.tokens <= 4 and 0.0 < rec.confidence <= 1.0
True
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace
from numbers import Integral
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer

from opticmem.encoder.byte_fallback import byte_fallback_tokenizer, placeholder_ids, read_tokenizer
from opticmem.encoder.checkpoint import load_checkpoint, not_a_file, read_config, refuse_pickles
from opticmem.encoder.codec import Recollection, VisionTokens, checkpoint_codec_name, compact
from opticmem.encoder.config import DecoderConfig, preset
from opticmem.encoder.continuous import generate_continuous
from opticmem.encoder.cuda_graph import GraphedFunction
from opticmem.encoder.errors import CheckpointError, InputError
from opticmem.encoder.examples import token_bytes
from opticmem.encoder.generate import GenerationConfig, Halt, Hold, Prompt, StepHook, generate
from opticmem.encoder.model import (
    OCRModel,
    build_model,
    default_dtype,
    resolve_device,
)
from opticmem.encoder.official import (
    REPO_ID,
    check_dtype,
    load_official,
    load_official_tokenizer,
    resolve_source,
)
from opticmem.encoder.preprocess import parse_tier, preprocess, to_rgb
from opticmem.encoder.token_cursor import TokenCursor
from opticmem.encoder.tokenizer import (
    BOS_ID,
    EOS_ID,
    IMAGE_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    VOCAB_SIZE,
    TokenizerError,
    load_tokenizer,
)
from opticmem.render.ink import ink_rows
from opticmem.render.layout import RenderSettings, redraw
from opticmem.render.tiers import Tier

log = logging.getLogger(__name__)

IMAGE_MARK = "<image>"
OFFICIAL_PROMPT = "<image>\nFree OCR."
"""The reference's plain-OCR prompt (``shared/design/deepseek-ocr-facts.md`` §3)."""

_P = ParamSpec("_P")
_R = TypeVar("_R")
_CODECS: weakref.WeakSet[OCRCodec] = weakref.WeakSet()
"""Every live codec, so that a forked child gets fresh call locks (:func:`_renew_locks`)."""


def one_call_at_a_time(
    method: Callable[Concatenate[OCRCodec, _P], _R],
) -> Callable[Concatenate[OCRCodec, _P], _R]:
    """Run ``method`` under the codec's call lock. The model builds state on first use
    (packed and fp16 copies of its weights, expert-set copies, cursor tables, CUDA graphs)
    and reuses buffers between steps, none of it safe for two calls at once: two threads
    packing the same weights together made one fail with "packed weights do not view
    their parameters"."""

    @functools.wraps(method)
    def locked(self: OCRCodec, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._call_lock:
            return method(self, *args, **kwargs)

    return locked


def _renew_locks() -> None:
    """In a forked child, every codec gets a fresh call lock: one a thread of the parent
    held at the fork (a background reader mid-decode) would stay held there for good."""
    for codec in list(_CODECS):
        codec._call_lock = threading.RLock()


os.register_at_fork(after_in_child=_renew_locks)


class OCRCodec:
    """Page images → vision tokens → text with one model and tokenizer.

    ``prompt`` is the "plain" template: the text before ``<image>`` goes between BOS and
    the vision slots, the text after it follows them. ``batch_size`` bounds how many pages
    go through the model at once (encode and decode). With ``continuous``, decoding keeps
    ``batch_size`` pages in flight and gives a row the next page as soon as its page ends
    (:func:`~opticmem.encoder.continuous.generate_continuous`) instead of waiting for the
    batch's longest page; worth it when many more pages than ``batch_size`` are decoded.
    With ``stop_past_page`` (on by default), a page whose writing leaves its last row stops
    decoding there (:meth:`AlignerFeed.past_page`); off, it decodes on to the token limit and
    is cut to the same text — the setting exists to measure what the stop saves. With
    ``read_to_ink`` (on by default), a page may not end above its last row of ink (read
    from its pixels when it is encoded, :attr:`VisionTokens.ink_rows`): a decoder that takes
    a blank line for the page's end reads on instead (:meth:`AlignerFeed.above_ink`).

    One codec may be shared by many threads (and memories): its ``encode`` and ``decode``
    calls run one at a time, in the order they take its lock.
    """

    def __init__(
        self,
        model: OCRModel,
        tokenizer: Tokenizer | None = None,
        *,
        name: str,
        prompt: str = IMAGE_MARK,
        generation: GenerationConfig | None = None,
        render_settings: RenderSettings | None = None,
        batch_size: int = 32,
    ) -> None:
        if IMAGE_MARK not in prompt:
            raise InputError(f"prompt must contain {IMAGE_MARK!r}; got {prompt!r}")
        self.batch_size = batch_size
        self.generation = generation or GenerationConfig()
        self._call_lock = threading.RLock()  # see one_call_at_a_time
        _CODECS.add(self)
        self.model = model.eval()
        if tokenizer is not None:
            self.tokenizer, self.tokenizer_source = tokenizer, "given"
        else:
            self.tokenizer, self.tokenizer_source = default_tokenizer(model.cfg.decoder)
        problem = vocabulary_problem(self.tokenizer, model.cfg.decoder)
        if problem:
            raise InputError(problem)
        self.continuous = False
        self.stop_past_page = True
        self.read_to_ink = True
        self._name = name
        self._render_settings = render_settings
        self._encode_grid: Callable[[torch.Tensor], torch.Tensor] = self.model.encode_grid
        before, after = prompt.split(IMAGE_MARK, 1)
        self._prefix = self._ids(before)
        self._suffix = self._ids(after)
        self._bytes = token_bytes(self.tokenizer) if model.aligner is not None else []
        self._cursors: dict[torch.device, TokenCursor] = {}  # tabulated once per device
        d = model.cfg.decoder
        self._skip = frozenset(
            {d.bos_token_id, d.eos_token_id, d.pad_token_id, d.image_token_id}
        ) | (placeholder_ids(self.tokenizer) if self.fallback_tokenizer else frozenset())

    @property
    def fallback_tokenizer(self) -> bool:
        """True when text goes through the byte-level fallback (no tokenizer file fits)."""
        return self.tokenizer_source == "byte-fallback"

    # ------------------------------------------------------------------ constructors

    @classmethod
    def random(
        cls,
        preset_name: str = "test",
        seed: int = 0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        prompt: str = IMAGE_MARK,
        generation: GenerationConfig | None = None,
        render_settings: RenderSettings | None = None,
        batch_size: int = 32,
    ) -> OCRCodec:
        """A randomly initialised model of the real architecture (deterministic per seed).

        Its text is meaningless, but every code path (shapes, batching, decoding, EOS,
        confidence) is the real one — for tests of the memory, never a fake.
        """
        _check_arguments(batch_size, generation)
        check_dtype(dtype)
        if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**64:
            raise InputError(f"seed must be a whole number (torch takes -2**63 … 2**64 - 1), "
                             f"got {seed!r}")
        dev = resolve_device(device)
        model = build_model(
            preset(preset_name), device=dev, dtype=dtype or default_dtype(dev), seed=seed
        )
        return cls(
            model, None, name=f"random:{preset_name}:{seed}", prompt=prompt,
            generation=generation, render_settings=render_settings, batch_size=batch_size,
        )

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        prompt: str = IMAGE_MARK,
        generation: GenerationConfig | None = None,
        render_settings: RenderSettings | None = None,
        batch_size: int = 32,
    ) -> OCRCodec:
        """Load one of our sharded checkpoints (and its ``tokenizer.json`` if present).

        The tokenizer is read and checked against ``config.json`` before the weights are:
        a corrupt or mismatched tokenizer fails at once, not after the model is built and
        every shard hashed and loaded; so does one whose special tokens are not at the
        config's ids (:func:`special_token_problem`) or that does not give text back as it
        was given (:func:`round_trip_problem`)."""
        _check_arguments(batch_size, generation)  # before the weights are read
        root = Path(directory)
        tok_path = root / "tokenizer.json"
        tokenizer = None
        # A tokenizer.json that is there but no file (a broken link, a folder) is damage,
        # not absence: the codec went on with the default tokenizer, reading another
        # vocabulary's text without a word.
        if os.path.lexists(tok_path) and (why := not_a_file(tok_path)):
            raise CheckpointError(f"tokenizer.json {why}", path=str(tok_path))
        if tok_path.is_file():
            refuse_pickles(root)  # a folder of pickled weights says so before its config
            tokenizer = read_tokenizer(tok_path)
            decoder = read_config(root).decoder
            if problem := special_token_problem(tokenizer, decoder):
                raise CheckpointError(problem, path=str(tok_path))
            if problem := vocabulary_problem(tokenizer, decoder):
                raise CheckpointError(problem, path=str(tok_path))
            # A checkpoint's own tokenizer is the one it was trained with, of exactly its
            # vocabulary (the shipped BPE, or the byte fallback saved alongside): a smaller
            # one is another model's, and decoding would drop every id it lacks, silently.
            if (size := tokenizer.get_vocab_size(with_added_tokens=True)) < decoder.vocab_size:
                raise CheckpointError(
                    f"the tokenizer has {size} tokens, the model's vocabulary "
                    f"{decoder.vocab_size}: it is another model's tokenizer (without it, "
                    "the codec uses the default one for this vocabulary)",
                    path=str(tok_path))
            if problem := round_trip_problem(tokenizer):
                raise CheckpointError(problem, path=str(tok_path))
        model = load_checkpoint(root, device=device, dtype=dtype)
        return cls(
            model, tokenizer, name=checkpoint_codec_name(root, model.cfg.name), prompt=prompt,
            generation=generation, render_settings=render_settings, batch_size=batch_size,
        )

    @classmethod
    def from_official(
        cls,
        source: str | Path = REPO_ID,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        prompt: str = OFFICIAL_PROMPT,
        revision: str | None = None,
        generation: GenerationConfig | None = None,
        batch_size: int = 32,
    ) -> OCRCodec:
        """The released DeepSeek-OCR weights and tokenizer (directory or Hub repo id).

        The tokenizer is read first: a directory without ``tokenizer.json`` fails at once,
        not after the 3B-parameter model has been built and its weights loaded."""
        check_dtype(dtype)  # before a Hub id is downloaded
        _check_arguments(batch_size, generation)
        root = resolve_source(source, revision)  # once: a Hub id is looked up once
        tokenizer = load_official_tokenizer(root)
        model = load_official(root, device=device, dtype=dtype)
        generation = generation or GenerationConfig(
            no_repeat_whitelist=frozenset({128821, 128822}), max_new_tokens=8192
        )
        # Named by where its weights are too: memories key cached readings by the codec's
        # name, and two folders of the same name (or two revisions of the repo, whose
        # snapshots are folders of their own) hold other weights.
        digest = _official_digest(root)
        return cls(
            model, tokenizer, name=f"deepseek-ocr:{Path(str(source)).name}:{digest}",
            prompt=prompt, generation=generation, batch_size=batch_size,
        )

    def compile_encoder(self, mode: str = "default") -> OCRCodec:
        """Encode through ``torch.compile`` from now on (one compilation per tier and batch).

        Worth it for long-lived GPU workers that encode many pages: the official encoder
        goes from ~24% to ~40% model-FLOPs utilisation at Base on an H200
        (``benchmarks/results/encoder_speed_compile_h200.md``). The first batch of each
        shape pays the compilation (tens of seconds). Returns ``self``.
        """
        self._encode_grid = torch.compile(self.model.encode_grid, dynamic=False, mode=mode)
        return self

    @property
    def batch_size(self) -> int:
        """Pages through the model at once (encode and decode); rows in flight when
        decoding continuously. A whole number ≥ 1 (else :class:`InputError`)."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._batch_size = _checked_batch_size(value)

    @property
    def generation(self) -> GenerationConfig:
        """The decoding settings (:class:`GenerationConfig`; else :class:`InputError`)."""
        return self._generation

    @generation.setter
    def generation(self, value: GenerationConfig) -> None:
        self._generation = _checked_generation(value)

    # ------------------------------------------------------------------ Codec protocol

    @property
    def name(self) -> str:
        return self._name

    @property
    def render_settings(self) -> RenderSettings | None:
        return self._render_settings

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @one_call_at_a_time
    def encode(self, images: Sequence[Image.Image], tier: Tier | str) -> list[VisionTokens]:
        """Encode page images (any size or mode) at ``tier``; one grid per image."""
        if isinstance(images, Image.Image):  # else a bare TypeError: Image has no len()
            raise InputError("encode takes a sequence of page images: pass [image] for one")
        _require_sequence(images, "encode", "page images")
        tier = parse_tier(tier)
        out: list[VisionTokens] = []
        param = next(self.model.parameters())
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            pixels = preprocess(chunk, tier, device=param.device, dtype=param.dtype)
            with torch.inference_mode():
                grid = self._encode_grid(pixels)  # (B, g, g, D)
            arr = grid.float().cpu().numpy()  # kept compact by VisionTokens
            # Where the page's writing ends: layout the decoder of our grid reads to. Read
            # from the image as preprocessing sees it (any mode, EXIF orientation applied).
            ink = [ink_rows(to_rgb(img, keep_grey=True), self._settings()) if self.aligned
                   else None for img in chunk]
            out += [VisionTokens(tier=tier, grid=compact(a), codec=self._name, ink_rows=k)
                    for a, k in zip(arr, ink, strict=True)]
        return out

    @one_call_at_a_time
    def decode(
        self,
        tokens: Sequence[VisionTokens],
        *,
        max_new_tokens: int | None = None,
        step_hook: StepHook | None = None,
    ) -> list[Recollection]:
        """Read text back from vision tokens, batched across pages.

        Pages of any mix of tiers decode together; for a model with a layout aligner, each
        batch holds one tier and :class:`AlignerFeed` feeds the aligner with the codec's
        ``render_settings`` (default :class:`~opticmem.render.RenderSettings`). A
        ``step_hook`` given here replaces that feed (see :func:`generate`). Such a model's
        text is laid out on the grid again before it is returned (:meth:`_on_grid`).
        """
        D = self.model.cfg.embed_dim
        if isinstance(tokens, VisionTokens):  # else a bare TypeError: it is not iterable
            raise InputError("decode takes a sequence of VisionTokens: pass [tokens] for one")
        _require_sequence(tokens, "decode", "VisionTokens")
        param = next(self.model.parameters())
        # Grids go in as the weights' dtype: a value past its range (1e39 for float32,
        # 7e4 for float16) is infinite there, and the page read back at NaN confidence.
        limit = torch.finfo(param.dtype).max
        for vt in tokens:
            if not isinstance(vt, VisionTokens):
                raise InputError(f"decode takes VisionTokens, got {type(vt).__name__}")
            if vt.codec and vt.codec != self._name:
                raise InputError(f"vision tokens made by {vt.codec!r}, not by {self._name!r}")
            if vt.dim != D:
                raise InputError(f"vision tokens have width {vt.dim}; this model needs {D}")
            if not np.isfinite(vt.grid).all():  # would read back as text of NaN confidence
                raise InputError("vision tokens hold NaN or infinite values")
            if (top := float(np.abs(vt.grid).max(initial=0))) > limit:
                raise InputError(f"vision tokens hold a value of magnitude {top:.3g}, past "
                                 f"the largest this model's {param.dtype} holds ({limit:.3g})")
        gen = self.generation
        if max_new_tokens is not None:
            gen = replace(gen, max_new_tokens=max_new_tokens)
        aligned = self.aligned and step_hook is None
        continuous = self.continuous and step_hook is None
        # With the aligner, a batch holds pages of one tier (one grid tensor per batch);
        # decoding continuously, one group per tier runs through ``batch_size`` rows.
        order = sorted(range(len(tokens)), key=lambda i: tokens[i].tier.rank if aligned else 0)
        batches: list[list[int]] = []
        for i in order:
            if (
                not batches
                or (len(batches[-1]) == self.batch_size and not continuous)
                or (aligned and tokens[batches[-1][0]].tier is not tokens[i].tier)
            ):
                batches.append([])
            batches[-1].append(i)
        results: dict[int, Recollection] = {}
        for idx in batches:
            t0 = time.perf_counter()
            with torch.inference_mode():
                grids = [
                    torch.from_numpy(np.asarray(tokens[i].grid, dtype=np.float32)).to(
                        device=param.device, dtype=param.dtype
                    )
                    for i in idx
                ]  # each (g, g, D)
                prompts = [
                    Prompt(
                        slots=self.model.grid_to_slots(g[None])[0],  # (g(g+1)+1, D)
                        prefix=self._prefix,
                        suffix=self._suffix,
                    )
                    for g in grids
                ]
            # No page's writing reaches past its last row: a larger count (any int
            # VisionTokens takes, 2**63 too) failed as a bare tensor overflow.
            ink = [min(tokens[i].ink_rows or 0, self._settings().rows) for i in idx]
            if continuous:
                rows = min(self.batch_size, len(idx))
                feed = None
                if aligned:
                    feed = AlignerFeed(self.model, grids[0].new_zeros(rows, *grids[0].shape),
                                       self._settings(), self._cursor(param.device),
                                       cuda_graph=gen.cuda_graphs, pages=grids, ink_rows=ink)
                outs = generate_continuous(self.model, prompts, gen, rows=rows, feed=feed,
                                           halt=self._halt(feed), hold=self._hold(feed))
            elif aligned:
                feed = AlignerFeed(self.model, torch.stack(grids), self._settings(),
                                   self._cursor(param.device), cuda_graph=gen.cuda_graphs,
                                   ink_rows=ink)
                T0 = 1 + len(self._prefix) + prompts[0].slots.shape[0] + len(self._suffix)
                outs = generate(self.model, prompts, gen, token_hook=feed,
                                prompt_extra=feed.prompt_extra(T0), halt=self._halt(feed),
                                hold=self._hold(feed))
            else:
                outs = generate(self.model, prompts, gen, step_hook=step_hook)
            seconds = (time.perf_counter() - t0) / len(idx)
            for i, o in zip(idx, outs, strict=True):
                if math.isnan(o.confidence):
                    # Finite in the weights' dtype, but too large for the decoder: its
                    # normalisation overflowed and every score of the page came out NaN.
                    top = float(np.abs(tokens[i].grid).max(initial=0))
                    raise InputError(
                        f"page {i} decoded to NaN scores: its vision tokens (largest "
                        f"magnitude {top:.3g}) are out of the range this model reads")
                results[i] = Recollection(
                    text=self._on_grid(self.detokenize(o.token_ids)),
                    tier=tokens[i].tier,
                    confidence=o.confidence,
                    tokens=len(o.token_ids),
                    seconds=seconds,
                    codec=self._name,
                    extra={"finished": float(o.finished)},
                )
        return [results[i] for i in range(len(tokens))]

    @property
    def aligned(self) -> bool:
        """True when decoding feeds the model's layout aligner (see :class:`AlignerFeed`)."""
        return self.model.aligner is not None

    def _cursor(self, device: torch.device) -> TokenCursor:
        """The aligner's cursor tables for this tokenizer on ``device``, built on first use."""
        cursor = self._cursors.get(device)
        if cursor is None:
            cursor = self._cursors[device] = TokenCursor(self._bytes, device)
        return cursor

    def _on_grid(self, text: str) -> str:
        """A layout-aware model reads the renderer's grid, so its text is laid out on that
        grid again (:func:`~opticmem.render.layout.redraw`): a row of spaces read where the
        page has an empty line, or spaces before a line end, cannot be on the page; nor
        can more lines than the page has rows (a decoder that misses the end of a full page
        reads on into the bottom margin; decoding stops at the first line break past the
        last row, :meth:`AlignerFeed.past_page`, and what that token wrote after it is
        dropped here). Only the lines the decoder
        wrote are counted, not the breaks the layout adds: one extra character on a full
        row moves the rest of that line to the next row, and the page's last line with it."""
        if not self.aligned:
            return text
        settings = self._settings()
        return redraw("\n".join(text.split("\n")[: settings.rows]), settings)

    def _halt(self, feed: AlignerFeed | None) -> Halt | None:
        """Which rows decoding stops for: past their page's last row, unless turned off."""
        return feed.past_page if feed is not None and self.stop_past_page else None

    def _hold(self, feed: AlignerFeed | None) -> Hold | None:
        """Which rows may not stop yet: above their page's last row of ink, unless off."""
        return feed.above_ink if feed is not None and self.read_to_ink else None

    def _settings(self) -> RenderSettings:
        return self._render_settings or RenderSettings()

    def read(
        self, images: Sequence[Image.Image], tier: Tier | str, *, max_new_tokens: int | None = None
    ) -> list[Recollection]:
        """``decode(encode(images, tier))``."""
        return self.decode(self.encode(images, tier), max_new_tokens=max_new_tokens)

    # ------------------------------------------------------------------ text

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of generated ids, without special and placeholder tokens."""
        return self.tokenizer.decode([i for i in ids if i not in self._skip])

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids) if text else []


class AlignerFeed:
    """Feeds a model's layout aligner while it decodes pages of our renderer.

    The training template (:mod:`opticmem.encoder.examples`) adds, at every step that
    predicts a transcript token, the aligner's reading of the vision tokens under the next
    character's cell. Decoding does the same: the prompt's last position reads the first
    cell, and each token fed back advances the rows' cursors
    (:class:`~opticmem.encoder.token_cursor.TokenCursor`, on the grid's device, no host
    sync) before the next step reads the new cells. It is a ``token_hook``.

    The aligner's per-page work is done once, when a page is given a row
    (:meth:`~opticmem.encoder.align.LayoutAligner.prepare`); a step only looks its points
    up (:meth:`~opticmem.encoder.align.LayoutAligner.read`). With ``cuda_graph`` (and a grid
    on CUDA) the cursor update and the read-out are recorded once as CUDA graphs and
    replayed every step (:class:`~opticmem.encoder.cuda_graph.GraphedFunction`).

    ``ink_rows`` gives each page's :attr:`VisionTokens.ink_rows` (0 when unknown), in the
    order of ``pages`` when they are given, else of ``grid``'s rows.
    """

    def __init__(
        self, model: OCRModel, grid: torch.Tensor, settings: RenderSettings,
        cursor: TokenCursor, *, cuda_graph: bool = False,
        pages: Sequence[torch.Tensor] = (), ink_rows: Sequence[int] = (),
    ) -> None:
        if model.aligner is None:
            raise InputError("this model has no layout aligner")
        self.aligner = model.aligner
        self.grid = grid  # (B, g, g, D): the pages the rows start with
        self.settings = settings
        self.cursor = cursor
        self.pages = pages
        """Page grids (g, g, D) by prompt index, for :meth:`start` (continuous batching)."""
        B = grid.shape[0]
        n_pages = len(pages) or B
        if ink_rows and len(ink_rows) != n_pages:
            raise InputError(f"ink_rows needs one count per page ({n_pages}); "
                             f"got {len(ink_rows)}")
        self.page_ink = torch.tensor(list(ink_rows) or [0] * n_pages, device=grid.device)
        self.ink = self.page_ink.clone() if not pages else self.page_ink.new_zeros(B)
        """(B,) the ink rows of the page each decoding row reads."""
        self.rows = torch.arange(B, device=grid.device)
        with torch.inference_mode():  # the grid is an inference tensor, the weights are not
            self.prepared = self.aligner.prepare(grid, settings)
        self.state = cursor.start(B)  # (B, 4)
        tokens = torch.zeros(B, dtype=torch.long, device=grid.device)
        self._advance = GraphedFunction(cursor.advance, self.state, tokens,
                                        enabled=cuda_graph)
        self._read = GraphedFunction(self._read_cells, TokenCursor.cells(self.state),
                                     enabled=cuda_graph)

    def start(self, rows: torch.Tensor, prompts: Sequence[int]) -> torch.Tensor:
        """Rows ``rows`` (k,) now read ``pages[p]`` for each of ``prompts``, from the first
        cell: the reading for their prompt's last position (k, D). A
        :class:`~opticmem.encoder.continuous.RowFeed`."""
        with torch.inference_mode():
            grid = torch.stack([self.pages[p] for p in prompts]).to(self.grid)
            # In place: a recorded read-out keeps reading the same buffer.
            self.prepared.tokens[rows] = self.aligner.prepare(grid, self.settings).tokens
            self.state = self.state.clone()  # may be a graph's output buffer
            self.state[rows] = self.cursor.start(len(prompts))
            self.ink[rows] = self.page_ink[torch.as_tensor(list(prompts), device=rows.device)]
            return self._embed()[rows]

    def _read_cells(self, cells: torch.Tensor) -> torch.Tensor:
        """(B, 2) next-character cells → (B, D) aligner embeddings in the grid's dtype."""
        return self.aligner.read(self.prepared, cells, self.rows).to(self.grid.dtype)

    def _embed(self) -> torch.Tensor:
        with torch.inference_mode():
            return self._read(TokenCursor.cells(self.state))  # (B, D)

    def past_page(self) -> torch.Tensor:
        """(B,) bool: rows whose writing has left the page's last row. Nothing after that
        line break can be on the page (:meth:`OCRCodec._on_grid` drops it), so decoding
        stops there: the ``halt`` of :func:`~opticmem.encoder.generate.generate`."""
        return TokenCursor.cells(self.state)[:, 0] >= self.settings.rows

    def above_ink(self) -> torch.Tensor:
        """(B,) bool: rows whose cursor is above their page's last row of ink. A whole line
        of writing is still unread below them, so they may not end the page: the ``hold``
        of :func:`~opticmem.encoder.generate.generate`."""
        return TokenCursor.cells(self.state)[:, 0] < self.ink - 1

    def prompt_extra(self, length: int) -> torch.Tensor:
        """(B, length, D): zeros except the last prompt position, which reads the first cell."""
        B, D = self.grid.shape[0], self.grid.shape[-1]
        extra = self.grid.new_zeros(B, length, D)
        extra[:, -1] = self._embed()
        return extra

    def __call__(self, tokens: torch.Tensor, step: int) -> torch.Tensor:
        """Advance every row by the token it is fed (B,); the cells' reading (B, 1, D)."""
        with torch.inference_mode():
            self.state = self._advance(self.state, tokens)
        return self._embed()[:, None]  # (B, 1, D)


def _require_sequence(items: object, call: str, of: str) -> None:
    """:class:`InputError` unless ``items`` is a sequence (a list, a tuple): a generator
    failed with a bare "object of type 'generator' has no len()" (or, to decode, was used
    up by the checks before the pages were read), and a set has no order to give the
    results back in."""
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise InputError(f"{call} takes a sequence (a list or tuple) of {of}, got "
                         f"{type(items).__name__}: pass list(...) of it")


def _checked_batch_size(value: object) -> int:
    """``value`` as a batch size: a whole number ≥ 1, else :class:`InputError` (``"32"``
    failed with a bare TypeError, and 1.5 was kept, to fail the first encode)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise InputError(f"batch_size must be a whole number ≥ 1, got {value!r}")
    return int(value)


def _checked_generation(value: object) -> GenerationConfig:
    """``value`` if it is a :class:`GenerationConfig`, else :class:`InputError`."""
    if not isinstance(value, GenerationConfig):
        raise InputError(f"generation must be a GenerationConfig, got {type(value).__name__}")
    return value


def _check_arguments(batch_size: object, generation: object) -> None:
    """What the constructor would refuse, checked before a model is built or loaded."""
    _checked_batch_size(batch_size)
    if generation is not None:
        _checked_generation(generation)


def default_tokenizer(cfg: DecoderConfig) -> tuple[Tokenizer, str]:
    """The shipped BPE when ``cfg``'s vocabulary and special ids are its own, else the
    byte-level fallback sized for ``cfg``. Returns the tokenizer and which one it is."""
    ids = (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id, cfg.image_token_id)
    if cfg.vocab_size == VOCAB_SIZE and ids == (BOS_ID, EOS_ID, PAD_ID, IMAGE_ID):
        try:
            return load_tokenizer(), "shipped"
        except TokenizerError as exc:
            log.warning("shipped tokenizer unusable, using the byte fallback: %s", exc)
    return byte_fallback_tokenizer(cfg), "byte-fallback"


def vocabulary_problem(tokenizer: Tokenizer, cfg: DecoderConfig) -> str | None:
    """Why ``tokenizer`` cannot feed a decoder of ``cfg``, or ``None``: an id past the
    model's vocabulary (a ``tokenizer.json`` of another model) would otherwise fail deep in
    the decoder's embedding, as an IndexError at the first decode."""
    top = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)
    if top >= cfg.vocab_size:
        return f"the tokenizer has ids up to {top}, past the model's vocabulary of {cfg.vocab_size}"
    return None


def special_token_problem(tokenizer: Tokenizer, cfg: DecoderConfig) -> str | None:
    """Why the special ids of ``cfg`` (bos, eos, pad, ``<image>``) do not fit ``tokenizer``,
    or ``None``. The tokenizers of our checkpoints (the shipped BPE, the byte fallback) hold
    ``<bos>``, ``<eos>``, ``<pad>`` and ``<image>`` as special tokens; each must sit at the
    config's id, and each config id must be a special token of the tokenizer.

    Either way round, a mismatch loaded and read garbage: the prompt's ``<image>`` slots or
    its BOS went in as another token, text holding the byte at the config's image id was
    taken for an image slot, and the decoder's EOS was dropped or never seen."""
    added = tokenizer.get_added_tokens_decoder()
    for name in SPECIAL_TOKENS:
        role = name.strip("<>")
        want = getattr(cfg, f"{role}_token_id")
        have = tokenizer.token_to_id(name)
        if have is not None and have != want:
            return (f"the tokenizer's special token {name} has id {have}, the model config's "
                    f"{role}_token_id is {want}: the tokenizer is not this model's")
        token = added.get(want)
        if token is None or not token.special:
            held = tokenizer.id_to_token(want)
            what = ("holds no token there" if held is None
                    else f"holds the ordinary token {held!r} there")
            return (f"the model config's {role}_token_id is {want}, but the tokenizer {what}, "
                    f"not the special token {name}: the tokenizer is not this model's")
    return None


ROUND_TRIP_PROBE = "Page 1: Hello, 서울 — ok?\n  x$ 😀"
"""Text a checkpoint's tokenizer must give back as it was given (letters, digits, spaces,
a line break, Hangul, punctuation, a symbol and an emoji)."""


def round_trip_problem(tokenizer: Tokenizer) -> str | None:
    """Why ``tokenizer`` does not give :data:`ROUND_TRIP_PROBE` back unchanged, or ``None``.

    Every tokenizer a checkpoint of ours is trained with (the shipped byte-level BPE, the
    byte fallback) round-trips any text exactly. One whose decoder, pre-tokenizer or
    normaliser is damaged or replaced loads and fits the vocabulary, and then every page
    reads back as byte symbols (``ĠìĦľ`` for `` 서``), without spaces or lowercased:
    text that is wrong with nothing to say so."""
    ids = tokenizer.encode(ROUND_TRIP_PROBE, add_special_tokens=False).ids
    back = tokenizer.decode(ids)
    if back != ROUND_TRIP_PROBE:
        return (f"the tokenizer does not give text back as it was given ({ROUND_TRIP_PROBE!r} "
                f"came back as {back!r}): its decoder, pre-tokenizer or normaliser is "
                "damaged or not the model's")
    return None


def _official_digest(root: Path) -> str:
    """A short digest of an official checkpoint folder: its absolute path, index and shard
    sizes (the released index holds no hashes, and hashing 6.7 GB of shards would take
    longer than loading them)."""
    h = hashlib.sha256(str(root.resolve()).encode("utf-8", "surrogatepass"))
    h.update((root / "model.safetensors.index.json").read_bytes())
    for shard in sorted(root.glob("*.safetensors")):
        h.update(f"{shard.name}:{shard.stat().st_size}".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:12]
