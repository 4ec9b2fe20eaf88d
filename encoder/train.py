"""Train the bundled codec on pages drawn by our own renderer.

Worker processes generate synthetic conversations (:mod:`opticmem.encoder.synth`), lay
them out into pages exactly as the memory does, draw each page once at Large and resample
it to two tiers, and hand the trainer whole batches of one tier. The trainer runs the
DeepEncoder + MoE decoder in bf16 with the layout aligner, and checkpoints everything
(model, optimiser, progress) as sharded safetensors so a run can continue in a later
call — the GPU machine is lent in ≤ 10-minute commands.

The learning-rate schedule follows *training minutes*, not steps: throughput is unknown
before the first run, while the time we can spend is fixed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from opticmem.encoder.bundled import BUNDLED_TOKENIZER, StepOutput, special_ids, training_step
from opticmem.encoder.durable import fsync_path, write_text_durably
from opticmem.encoder.errors import CheckpointError, InputError
from opticmem.encoder.examples import IGNORE, Example, collate, make_examples, token_bytes
from opticmem.encoder.model import OCRModel
from opticmem.encoder.moe import MoE, TrainDispatch
from opticmem.encoder.progress import progress_enabled
from opticmem.encoder.train_limits import MAX_WORKERS
from opticmem.render import ORDER, RenderSettings, Tier

log = logging.getLogger(__name__)


BATCH_PAGES: dict[str, int] = {"large": 24, "base": 32, "small": 48, "tiny": 48}
"""Default pages per training step at each tier."""



@dataclass
class TrainConfig:
    """Everything a training run needs; saved beside its checkpoints."""

    out_dir: Path
    preset: str = "bundled"
    minutes: float = 8.0
    """Wall-clock minutes of training in this call (the run stops, checkpoints, exits)."""
    total_minutes: float = 36.0
    """Planned minutes across all resumed calls: the schedule's horizon."""
    phase_start: float = 0.0
    """Training minutes at which this cosine phase began: a warm restart continues
    trained weights with a new phase from ``peak_lr`` down to the floor, ending at
    ``phase_start + total_minutes``."""
    peak_lr: float = 7.0e-4
    min_lr_ratio: float = 0.05
    warmup_steps: int = 300
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    batch_pages: dict[str, int] = field(default_factory=lambda: dict(BATCH_PAGES))
    """Pages per step at each tier (one tier per step); :func:`scaled_batches` scales them."""
    tier_weights: dict[str, float] = field(
        default_factory=lambda: {"large": 0.2, "base": 0.2, "small": 0.3, "tiny": 0.3}
    )
    tiers_per_page: int = 2
    workers: int = max(1, (os.cpu_count() or 2) - 3)
    """Data-generating processes, 0 … :data:`MAX_WORKERS` (0: the trainer makes its own
    pages)."""
    seed: int = 1234
    pseudo_word_rate: float = 0.15
    """Share of words drawn as random letters (:func:`~opticmem.encoder.synth.pseudo_words`),
    so the decoder reads words it has never seen instead of guessing them."""
    pseudo_symbol_rate: float = 0.0
    """Share of punctuation and symbols redrawn at random
    (:func:`~opticmem.encoder.synth.pseudo_symbols`): the characters held-out pages still
    misread most after pseudo-words. Off by default: no shipped phase has used it yet."""
    readout_weight: float = 0.5
    """Weight of the aligner read-out loss (see :func:`~opticmem.encoder.bundled.training_step`)."""
    gap_every: int = 200
    """Every this many steps, log the loss on the same batch with blank pages: the gap
    between the two is how much the decoder reads rather than guesses."""
    checkpoint_minutes: float = 3.0
    log_every: int = 25
    tokenizer: Path | None = None
    synth_dir: Path | None = None
    """The exported synth sources to train on (default: :func:`~opticmem.encoder.synth.data_dir`,
    else small ones built in-process)."""
    max_steps: int | None = None
    device: str = "auto"
    compile: bool = False
    """Compile the vision stages (:func:`compile_vision`)."""
    length_bucket: int = 0
    """Pad each batch's decoder length up to a multiple of this many steps (0: to its
    longest row only), so the decoder sees a few fixed shapes; losses and gradients are
    unchanged (:func:`~opticmem.encoder.examples.collate`), the padding costs compute."""
    compile_decoder: bool = False
    """Compile the decoder's layers for fixed shapes (:func:`compile_decoder`); needs
    ``length_bucket`` and the ``dense`` MoE path."""
    moe_dispatch: TrainDispatch = "grouped"
    """How the MoE layers run their routed experts in training
    (:attr:`~opticmem.encoder.moe.MoE.train_dispatch`): ``dense`` never waits for the GPU."""
    rewarm_steps: int = 150
    """Linear re-warm-up after starting from ``init_from`` (a fresh optimiser)."""
    init_from: Path | None = None
    """Start from these weights (a checkpoint directory) when no saved state exists — to
    continue on a fresh machine from exported weights, with a fresh optimiser."""

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()},
                          indent=2)


def parse_tier_mix(text: str, tiers_per_page: int = 2) -> dict[str, float]:
    """``"large=0.1,base=0.1,small=0.5,tiny=0.3"`` → :attr:`TrainConfig.tier_weights`.

    Tiers left out weigh 0. Raises :class:`~opticmem.encoder.errors.InputError` on an
    unknown tier, a value that is not a finite number ≥ 0, or fewer tiers with weight than
    ``tiers_per_page`` (each page is drawn at that many different tiers).
    """
    names = [t.value for t in ORDER]
    weights = dict.fromkeys(names, 0.0)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in weights:
            raise InputError(f"tier mix item {item!r}: expected TIER=WEIGHT with TIER one of "
                             f"{', '.join(names)}")
        try:
            weight = float(value)
        except ValueError:
            raise InputError(f"tier mix item {item!r}: {value!r} is not a number") from None
        if not weight >= 0 or math.isinf(weight):
            raise InputError(f"tier mix item {item!r}: weights must be finite and ≥ 0")
        weights[name] = weight
    if sum(w > 0 for w in weights.values()) < tiers_per_page:
        raise InputError(f"tier mix {text!r}: give at least {tiers_per_page} tiers a weight "
                         "above 0 (each page is drawn at that many tiers)")
    return weights


def scaled_batches(scale: float) -> dict[str, int]:
    """:data:`BATCH_PAGES` times ``scale``, rounded, at least one page per tier: bigger
    steps for a GPU with memory to spare when the step, not the data, sets the pace (the
    log's ``data_wait``). Raises :class:`~opticmem.encoder.errors.InputError` unless
    ``scale`` is a finite number > 0."""
    if not 0 < scale < math.inf:
        raise InputError(f"batch scale must be a finite number > 0, got {scale!r}")
    return {tier: max(1, round(pages * scale)) for tier, pages in BATCH_PAGES.items()}


# --------------------------------------------------------------------------- data


class PageBatches(IterableDataset):
    """Endless batches of one tier each, generated in the worker processes."""

    def __init__(self, cfg: TrainConfig, tokenizer_path: Path, specials: dict[str, int],
                 run_index: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer_path = tokenizer_path
        self.specials = specials
        self.run_index = run_index

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        from tokenizers import Tokenizer

        from opticmem.encoder import synth

        info = get_worker_info()
        wid = info.id if info else 0
        seed = self.cfg.seed * 1_000_003 + self.run_index * 1009 + wid
        rng = np.random.default_rng(seed)
        tok = Tokenizer.from_file(str(self.tokenizer_path))
        tok.encode_special_tokens = True  # "<eos>" typed in a chat is text
        table = token_bytes(tok)
        settings = RenderSettings()
        pages = synth.page_stream(seed, "train", settings, data_dir=self.cfg.synth_dir,
                                  pseudo_rate=self.cfg.pseudo_word_rate,
                                  symbol_rate=self.cfg.pseudo_symbol_rate)
        names = [t.value for t in ORDER]
        weights = np.array([self.cfg.tier_weights[n] for n in names], dtype=np.float64)
        weights /= weights.sum()
        buffers: dict[Tier, list[Example]] = {t: [] for t in ORDER}
        k = min(self.cfg.tiers_per_page, len(ORDER))
        while True:
            tiers = [ORDER[int(i)] for i in rng.choice(len(ORDER), size=k, replace=False,
                                                        p=weights)]
            for example in make_examples(next(pages), tiers, tok, table):
                tier = example.tier
                buffers[tier].append(example)
                if len(buffers[tier]) >= self.cfg.batch_pages[tier.value]:
                    yield collate(buffers[tier], **self.specials,
                                  bucket=self.cfg.length_bucket)
                    buffers[tier] = []


def compile_vision(model: OCRModel) -> None:
    """Run the vision stage through ``torch.compile`` from now on (one graph per tier's
    batch shape). Compiled in place: ``model.vision = torch.compile(model.vision)`` would
    wrap it in a module whose parameters are named ``vision._orig_mod.*``, and every
    checkpoint saved afterwards would carry those names, which no model loads."""
    model.vision.compile(dynamic=False)


def compile_decoder(model: OCRModel, length_bucket: int) -> None:
    """Run each decoder layer through ``torch.compile`` for fixed shapes from now on, in
    place as :func:`compile_vision` does (checkpoints keep their parameter names).

    Meant for batches padded to ``length_bucket`` (:attr:`TrainConfig.length_bucket`):
    every (pages per step, bucketed length) pair the run meets is one graph per kind of
    layer — the dense first layer and the MoE layers, whose one graph serves them all —
    and dynamo's recompile limits are raised to let every such pair compile rather than
    fall back to eager. Compiled per layer rather than as a whole decoder, so the time
    spent compiling does not grow with depth. The MoE layers must train through their
    ``dense`` path: ``grouped`` reads expert counts back to the host, which breaks the
    graph and makes a new one for every count."""
    import torch._dynamo.config as dynamo_config

    if length_bucket <= 0:
        raise InputError("compiling the decoder needs a length bucket > 0: without one, "
                         "every batch length is a new graph")
    lengths = math.ceil(model.cfg.decoder.max_positions / length_bucket)
    # pages-per-step sizes (one per tier) × lengths × kinds of layer (dense, MoE)
    graphs = len(ORDER) * lengths * 2
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, graphs)
    dynamo_config.accumulated_recompile_limit = max(
        dynamo_config.accumulated_recompile_limit, graphs)
    for layer in model.decoder.layers:
        layer.compile(dynamic=False)


def use_moe_dispatch(model: OCRModel, dispatch: TrainDispatch) -> None:
    """Train every MoE layer of ``model`` through ``dispatch``
    (:attr:`~opticmem.encoder.moe.MoE.train_dispatch`)."""
    for module in model.modules():
        if isinstance(module, MoE):
            module.train_dispatch = dispatch


def make_optimizer(model: OCRModel, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW as the trainer runs it: no weight decay on norms, embeddings and biases; the
    fused kernel on CUDA."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in n or "embed" in n else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.peak_lr, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda",
    )


def page_loader(cfg: TrainConfig, tokenizer_path: Path, specials: dict[str, int], *,
                run_index: int, pin_memory: bool) -> DataLoader[dict[str, torch.Tensor]]:
    """The trainer's stream of batches: :class:`PageBatches` made in ``cfg.workers``
    processes (in this one with 0)."""
    data = PageBatches(cfg, tokenizer_path, specials, run_index=run_index)
    return DataLoader(data, batch_size=None, num_workers=cfg.workers, pin_memory=pin_memory,
                      prefetch_factor=4 if cfg.workers else None, persistent_workers=False)


@dataclass
class Update:
    """What one optimiser step leaves for the log; nothing in it has been read back from
    the device yet."""

    output: StepOutput
    loss: torch.Tensor
    """The main cross-entropy."""
    readout_loss: torch.Tensor | None
    grad_norm: torch.Tensor
    """Before clipping."""


def update(model: OCRModel, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
           step_fn: Callable[[dict[str, torch.Tensor]], StepOutput], cfg: TrainConfig) -> Update:
    """One training step on ``batch`` (on the model's device): ``step_fn``'s teacher-forced
    forward under bf16 autocast on CUDA, the main, read-out and load-balancing losses,
    backward, gradient clipping and the optimiser step at its current learning rate."""
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        outs = step_fn(batch)
    main = F.cross_entropy(outs.logits.float(), outs.labels)
    loss = main
    rloss = None
    if outs.readout is not None and cfg.readout_weight > 0:
        rloss = F.cross_entropy(outs.readout.float(), outs.labels)
        loss = loss + cfg.readout_weight * rloss
    aux = model.decoder.aux_loss()
    if aux is not None:
        loss = loss + aux.float()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return Update(outs, main, rloss, gnorm)


# --------------------------------------------------------------------------- checkpoints


def _flatten_optimizer(
    opt: torch.optim.Optimizer, names: dict[int, str]
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if not st:
                continue
            name = names[id(p)]
            for key, val in st.items():
                t = val if torch.is_tensor(val) else torch.tensor(val)
                out[f"{name}::{key}"] = t.detach().cpu().contiguous()
    return out


def _restore_optimizer(opt: torch.optim.Optimizer, flat: dict[str, torch.Tensor],
                       params: dict[str, torch.nn.Parameter], origin: Path) -> None:
    """Put saved moments back on their parameters; :class:`CheckpointError` naming
    ``origin`` for an entry that fits no parameter (before any is set)."""
    for key, val in flat.items():
        name, sep, _ = key.partition("::")
        p = params.get(name)
        if not sep or p is None or (val.dim() and val.shape != p.shape):
            raise CheckpointError("optimiser entry fits no parameter of the model "
                                  f"({_DAMAGED_STATE})", path=str(origin), key=key)
    for key, val in flat.items():
        name, slot = key.split("::")
        p = params[name]
        st = opt.state.setdefault(p, {})
        # fused AdamW keeps its step counters on the parameters' device too
        st[slot] = val.to(p.device)
    log.info("restored optimiser state for %d tensors", len(flat))


_DAMAGED_STATE = ("delete the run's state folder to start afresh, or train into another run "
                  "directory (--out)")
_PROGRESS_FIELDS: dict[str, type | tuple[type, ...]] = {
    "step": int, "pages": int, "minutes": (int, float), "runs": int, "log": list}


_BAD_RECORD = ("fix or remove it to start from the weights with no record of their "
               "training")


def _read_progress(path: Path, hint: str = _DAMAGED_STATE, *,
                   partial: bool = False) -> dict[str, Any]:
    """A saved state's ``progress.json``; :class:`CheckpointError` naming it (and ending
    in ``hint``) when it is unreadable or lacks a field the loop counts on. ``partial``
    lets fields be absent (the record beside exported weights), not wrong."""
    try:
        progress = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"unreadable training progress: {exc} ({hint})",
                              path=str(path)) from exc
    if not isinstance(progress, dict):
        raise CheckpointError(f"training progress is not a JSON object ({hint})",
                              path=str(path))
    for key, kind in _PROGRESS_FIELDS.items():
        if partial and key not in progress:
            continue
        value = progress.get(key)
        # counts and minutes are ≥ 0 and finite: a negative step made the warm-up's
        # learning rate negative (gradient ascent, saved over the state), NaN minutes
        # went into the schedule
        if isinstance(value, bool) or not isinstance(value, kind) or (
                isinstance(value, (int, float)) and not (math.isfinite(value) and value >= 0)):
            raise CheckpointError(f"training progress has {key} = {value!r} ({hint})",
                                  path=str(path), key=key)
    return progress


def _read_optimizer(state_dir: Path) -> dict[str, torch.Tensor]:
    """Every optimiser moment of a saved state. :func:`save_training_state` always writes
    at least one shard, so none means the state is incomplete: resuming would run at full
    learning rate over zero moments, which the re-warm-up exists to avoid."""
    files = sorted(state_dir.glob("optimizer-*.safetensors"))
    if not files:
        raise CheckpointError(f"no optimizer-*.safetensors shards ({_DAMAGED_STATE})",
                              path=str(state_dir))
    flat: dict[str, torch.Tensor] = {}
    names = {f.name for f in files}
    for f in files:
        try:
            with safe_open(str(f), framework="pt", device="cpu") as shard:
                total = (shard.metadata() or {}).get("shards")
                keys = shard.keys()  # a safe_open handle is no mapping
                flat.update({k: shard.get_tensor(k) for k in keys})
        except Exception as exc:  # safetensors raises SafetensorError, OSError…
            raise CheckpointError(f"unreadable optimiser shard: {exc} ({_DAMAGED_STATE})",
                                  path=str(f)) from exc
        # Each shard records how many there are (states saved before that do not): one
        # missing left its parameters' moments empty, which AdamW filled with zeros at
        # full learning rate, or raised a KeyError inside the loop (a parameter's slots
        # split across two shards).
        if total is not None:
            expected = ({_optimizer_shard(i) for i in range(int(total))} if total.isdigit()
                        else set())
            if names != expected:
                odd = sorted(expected - names) or sorted(names - expected)
                what = "missing" if expected - names else "not one of them"
                raise CheckpointError(f"the state was saved with {total} optimiser shards: "
                                      f"{odd[0]} is {what} ({_DAMAGED_STATE})",
                                      path=str(state_dir / odd[0]))
    return flat


OPTIMIZER_SHARD_BYTES = 15 * 2**20
"""Largest optimiser shard :func:`save_training_state` writes (one tensor may exceed it)."""


def _optimizer_shard(i: int) -> str:
    return f"optimizer-{i:03d}.safetensors"


def recover_training_state(out: Path) -> None:
    """Finish the swap of a :func:`save_training_state` killed between its two renames.

    The save renames ``out`` to ``out.old``, then the complete ``out.tmp`` to ``out``: a
    run killed between the two left no ``out`` at all, so the next call started from
    scratch and its first save deleted both complete states. With ``out`` missing and
    ``out.old`` present, ``out.tmp`` was written in full before the first rename, so it is
    moved into place (``out.old``, when ``out.tmp`` lacks its progress record); the next
    save clears what is left beside it."""
    tmp = out.with_name(out.name + ".tmp")
    old = out.with_name(out.name + ".old")
    if out.exists() or not old.is_dir():
        return
    newest = tmp if (tmp / "progress.json").is_file() else old
    newest.rename(out)
    fsync_path(out.parent)
    log.warning("a save of %s was interrupted mid-swap: restored it from %s", out, newest)


def save_training_state(out: Path, model: OCRModel, opt: torch.optim.Optimizer,
                        progress: dict[str, Any]) -> None:
    """Model (fp32, sharded ≤ 16 MiB), optimiser moments and progress, atomically and
    durably (every file and the folders around the renames synced to the disk, see
    :mod:`opticmem.encoder.durable`).

    Written beside ``out`` first, then swapped in. What a run killed mid-save left of
    those side folders is cleared first: a stale ``.old`` would make the swap fail (a
    folder cannot be renamed onto a non-empty one), losing the run's work at its final
    save, and a stale ``.tmp`` could hold shards this save does not write."""
    import shutil

    from opticmem.encoder.checkpoint import save_checkpoint

    recover_training_state(out)
    tmp = out.with_name(out.name + ".tmp")
    old = out.with_name(out.name + ".old")
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir(parents=True)
    save_checkpoint(model, tmp / "model")
    names = {id(p): n for n, p in model.named_parameters()}
    flat = _flatten_optimizer(opt, names)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in flat.items():
        nbytes = v.numel() * v.element_size()
        if size + nbytes > OPTIMIZER_SHARD_BYTES and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += nbytes
    for i, sh in enumerate(shards):
        save_file(sh, str(tmp / _optimizer_shard(i)), metadata={"shards": str(len(shards))})
        fsync_path(tmp / _optimizer_shard(i))
    (tmp / "progress.json").write_text(json.dumps(progress, indent=2))
    fsync_path(tmp / "progress.json")
    fsync_path(tmp)  # save_checkpoint synced tmp/model and tmp's entry for it
    fsync_path(out.parent)  # tmp's own entry, before it is renamed
    if out.exists():
        out.rename(old)
        tmp.rename(out)
        fsync_path(out.parent)  # the new state is in place on disk before the old goes
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    fsync_path(out.parent)


# --------------------------------------------------------------------------- schedule


def learning_rate(cfg: TrainConfig, step: int, minutes: float) -> float:
    """Linear warm-up by steps, then cosine decay over the planned training minutes
    (of the current phase, from ``cfg.phase_start``)."""
    if step < cfg.warmup_steps:
        return cfg.peak_lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, max(0.0, minutes - cfg.phase_start) / cfg.total_minutes)
    low = cfg.peak_lr * cfg.min_lr_ratio
    return low + (cfg.peak_lr - low) * 0.5 * (1 + math.cos(math.pi * frac))


# --------------------------------------------------------------------------- the loop


def _hard_mask(labels: torch.Tensor, first_byte: torch.Tensor) -> torch.Tensor:
    """Targets a language prior cannot guess: tokens starting with a digit or a word start."""
    fb = first_byte[labels.clamp(min=0)]
    return (labels != IGNORE) & fb


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training for ``cfg.minutes``; returns the progress record."""
    from tokenizers import Tokenizer

    from opticmem.encoder import synth
    from opticmem.encoder.checkpoint import (
        CONFIG_FILE,
        load_tensors,
        quantization_scales,
        read_config,
        read_index,
        verify_shards,
    )
    from opticmem.encoder.config import preset
    from opticmem.encoder.model import build_model

    if cfg.moe_dispatch not in get_args(TrainDispatch):
        raise InputError(f"moe_dispatch must be one of {', '.join(get_args(TrainDispatch))}, "
                         f"got {cfg.moe_dispatch!r}")
    if cfg.length_bucket < 0:
        raise InputError(f"length_bucket must be ≥ 0, got {cfg.length_bucket}")
    if (isinstance(cfg.workers, bool) or not isinstance(cfg.workers, int)
            or not 0 <= cfg.workers <= MAX_WORKERS):
        # the data loader took any count: a billion started processes until the machine
        # ran out of memory; -1 was torch's ValueError, after the model was built
        raise InputError(f"workers must be a whole number in 0 … {MAX_WORKERS}, "
                         f"got {cfg.workers!r}")
    for name, low in (("minutes", 0.0), ("total_minutes", 0.0), ("checkpoint_minutes", 0.0),
                      ("peak_lr", 0.0), ("phase_start", None)):
        value = getattr(cfg, name)
        # inf minutes trained for ever; NaN compared false with every stop and did too; an
        # inf learning rate made every weight NaN and saved them over the trained state
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or (value <= low if low is not None else value < 0)):
            bound = "> 0" if low is not None else "≥ 0"
            raise InputError(f"{name} must be a finite number {bound}, got {value!r}")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**64:
        # numpy's generators take no negative seed, torch none of 2**64 or more: either
        # failed only in the data loader, after the run directory and model were made.
        raise InputError(f"seed must be a whole number in 0 … 2**64 - 1, got {cfg.seed!r}")
    if cfg.compile_decoder and (cfg.length_bucket == 0 or cfg.moe_dispatch != "dense"):
        raise InputError("compile_decoder needs length_bucket > 0 (fixed shapes) and "
                         "moe_dispatch 'dense' (no host reads inside the graph)")
    dev = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                       else ("cpu" if cfg.device == "auto" else cfg.device))
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    state_dir = out / "state"
    tok_path = Path(cfg.tokenizer or BUNDLED_TOKENIZER)
    tok = Tokenizer.from_file(str(tok_path))
    tok.encode_special_tokens = True

    recover_training_state(state_dir)  # a run killed mid-save left state.old, state.tmp
    resumed = (state_dir / "progress.json").exists()
    if not resumed and state_dir.is_dir() and any(state_dir.iterdir()):
        # A save writes progress.json last into a folder swapped in whole, so a state
        # without it was cut short some other way (a copy of the run directory stopped
        # before its last file). Training on started afresh and replaced it at its first save.
        raise CheckpointError("the run's state has no progress.json: it is incomplete "
                              f"({_DAMAGED_STATE})", path=str(state_dir / "progress.json"))
    weights_dir = state_dir / "model" if resumed else cfg.init_from
    model_cfg = preset(cfg.preset)
    if weights_dir is not None:
        # The weights' own sizes: a model grown from the preset (encoder.grow) keeps its
        # name. Weights of another preset would fail deep in loading as a "missing tensor".
        model_cfg = read_config(weights_dir)
        saved = model_cfg.name
        if saved != cfg.preset:
            where = (f"the run directory {out} holds" if resumed
                     else f"the weights at {weights_dir} are")
            raise CheckpointError(f"{where} a {saved!r} model, not {cfg.preset!r}: train "
                                  f"with preset {saved!r} (--preset {saved})"
                                  + (", or into another run directory (--out)" if resumed
                                     else ""),
                                  path=str(Path(weights_dir) / CONFIG_FILE))
    if cfg.length_bucket > model_cfg.decoder.max_positions:
        # a bucket past the longest sequence pads every batch to it: 10**9 asked the
        # allocator for 192 GB after the run directory and model were made
        raise InputError(f"length_bucket must be ≤ the decoder's max_positions "
                         f"({model_cfg.decoder.max_positions}), got {cfg.length_bucket}")
    # The record beside --init-from weights, read before anything is made: a damaged one
    # failed as a JSONDecodeError after the run directory was made, or (a "log" that is no
    # list, a "step" that is no number) only in the loop, after the first training step.
    prior: dict[str, Any] = {}
    if not resumed and cfg.init_from is not None:
        record = next((p for p in (Path(cfg.init_from) / n
                                   for n in ("progress.json", "training_log.json"))
                       if p.is_file()), None)
        if record is not None:
            prior = _read_progress(record, _BAD_RECORD, partial=True)
            prior.setdefault("log", [])
    # Missing sources would fail only in the data loader, after the model was built (and in
    # a worker process); read here, they are cached for the loader (forked workers inherit).
    synth.load_sources("train", cfg.synth_dir)
    init_index = None
    if not resumed and cfg.init_from is not None:  # a corrupt shard left an empty run dir
        init_index = read_index(Path(cfg.init_from))
        verify_shards(Path(cfg.init_from), *init_index)
    out.mkdir(parents=True, exist_ok=True)  # after the checks: a refused run leaves nothing
    model = build_model(model_cfg, device="cpu", seed=cfg.seed)
    if tok.get_vocab_size() > model.cfg.decoder.vocab_size:
        raise ValueError(f"tokenizer has {tok.get_vocab_size()} ids, the {cfg.preset} decoder "
                         f"{model.cfg.decoder.vocab_size}")
    progress: dict[str, Any] = {"step": 0, "pages": 0, "minutes": 0.0, "runs": 0, "log": []}
    opt = make_optimizer(model, cfg, dev)
    fresh_optimiser = not resumed  # re-warm the learning rate over zero Adam moments
    if resumed:
        # Verified as load_checkpoint does: a flipped bit still reads as a tensor, and
        # training on would bake it into every later checkpoint.
        weight_map, meta = read_index(state_dir / "model")
        verify_shards(state_dir / "model", weight_map, meta)
        progress = _read_progress(state_dir / "progress.json")
        load_tensors(model, state_dir / "model", weight_map)
        flat = _read_optimizer(state_dir)
        model.to(dev)
        _restore_optimizer(opt, flat, dict(model.named_parameters()), state_dir)
        log.info("resumed at step %d (%.1f min, %d pages)", progress["step"],
                 progress["minutes"], progress["pages"])
    elif cfg.init_from is not None:
        assert init_index is not None
        weight_map, meta = init_index
        load_tensors(model, Path(cfg.init_from), weight_map,  # int8 exports too (QUANTIZE=int8)
                     scales=quantization_scales(Path(cfg.init_from), weight_map, meta))
        log.info("initialised from %s", cfg.init_from)
        # A training state's record, or the one shipped beside the bundled weights.
        progress.update({k: prior[k] for k in ("step", "pages", "minutes", "runs", "log")
                         if k in prior})
    model.to(dev)
    model.train()
    use_moe_dispatch(model, cfg.moe_dispatch)
    write_text_durably(out / "train_config.json", cfg.to_json())

    settings = RenderSettings()
    specials = special_ids(model.cfg.decoder)
    loader = page_loader(cfg, tok_path, specials, run_index=int(progress["runs"]),
                         pin_memory=dev.type == "cuda")
    table = token_bytes(tok)
    first_hard = torch.tensor(
        [bool(b) and (chr(b[0]).isdigit() or (b[:1] == b" " and len(b) > 1 and chr(b[1]).isalnum()))
         for b in table], device=dev)
    def step_fn(batch: dict[str, torch.Tensor]) -> StepOutput:
        return training_step(model, batch, settings)


    if cfg.compile:
        compile_vision(model)
    if cfg.compile_decoder:
        compile_decoder(model, cfg.length_bucket)

    t_start = time.monotonic()
    first_step = int(progress["step"])
    last_ckpt = t_start
    minutes0 = float(progress["minutes"])
    ema: dict[str, float] = {}
    window_pages, window_t = 0, time.monotonic()
    # Time spent blocked on the loader: its share of each log window says whether the
    # data workers or the GPU step set the pace (more workers, or bigger batches).
    window_wait, asked = 0.0, window_t
    bar = tqdm(total=None, desc="train", unit="step", dynamic_ncols=True,
               disable=not progress_enabled(os.isatty(2)))
    for batch in loader:
        window_wait += time.monotonic() - asked
        elapsed = (time.monotonic() - t_start) / 60
        if elapsed >= cfg.minutes or (cfg.max_steps and progress["step"] >= cfg.max_steps):
            break
        step = int(progress["step"])
        lr = learning_rate(cfg, step, minutes0 + elapsed)
        local = step - first_step
        if fresh_optimiser and step > cfg.warmup_steps and local < cfg.rewarm_steps:
            lr *= (local + 1) / cfg.rewarm_steps
        for g in opt.param_groups:
            g["lr"] = lr
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        tier = Tier.parse(_tier_of(batch["images"].shape[-1]))
        done = update(model, opt, batch, step_fn, cfg)
        logits, labels = done.output.logits, done.output.labels
        main, rloss, gnorm = done.loss, done.readout_loss, done.grad_norm

        n_pages = int(batch["images"].shape[0])
        progress["step"] = step + 1
        progress["pages"] = int(progress["pages"]) + n_pages
        window_pages += n_pages
        if (step + 1) % cfg.log_every == 0:
            with torch.no_grad():
                pred = logits.argmax(-1)
                acc = (pred == labels).float().mean().item()
                hard = first_hard[labels]
                hacc = (pred[hard] == labels[hard]).float().mean().item() if hard.any() else 0.0
            now = time.monotonic()
            rate = window_pages / max(now - window_t, 1e-6)
            data_wait = window_wait / max(now - window_t, 1e-6)
            window_pages, window_t, window_wait = 0, now, 0.0
            key = tier.value
            ema[key] = main.item() if key not in ema else 0.8 * ema[key] + 0.2 * main.item()
            rec = {"step": step + 1, "min": round(minutes0 + elapsed, 2), "tier": key,
                   "loss": round(main.item(), 4), "acc": round(acc, 4), "hard_acc": round(hacc, 4),
                   "readout": round(rloss.item(), 4) if rloss is not None else None,
                   "lr": lr, "gnorm": round(float(gnorm), 3), "pages_s": round(rate, 1),
                   "data_wait": round(data_wait, 3), "pages": progress["pages"]}
            if dev.type == "cuda":  # what a bigger --batch-scale has to fit beside
                rec["peak_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
            if cfg.gap_every and (step + 1) % cfg.gap_every == 0:
                blank = dict(batch, images=torch.full_like(batch["images"], 255))
                # Eager: without gradients the model takes other paths (the MoE layers'
                # inference ones), which compiled stages would have to compile anew.
                with (torch.no_grad(),
                      torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"),
                      torch.compiler.set_stance("force_eager")):
                    b_out = step_fn(blank)
                rec["blank_loss"] = round(F.cross_entropy(b_out.logits.float(), labels).item(), 4)
            progress["log"].append(rec)
            log.info(json.dumps(rec))
            bar.set_postfix(loss=f"{main.item():.3f}", acc=f"{acc:.3f}", tier=key,
                            pages_s=f"{rate:.0f}")
        bar.update(1)
        if time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60:
            progress["minutes"] = minutes0 + (time.monotonic() - t_start) / 60
            save_training_state(state_dir, model, opt, progress)
            last_ckpt = time.monotonic()
        asked = time.monotonic()
    bar.close()
    progress["minutes"] = minutes0 + (time.monotonic() - t_start) / 60
    progress["runs"] = int(progress["runs"]) + 1
    save_training_state(state_dir, model, opt, progress)
    write_text_durably(out / "progress.json", json.dumps(progress, indent=2))
    return progress


def _tier_of(pixels: int) -> str:
    for t in ORDER:
        if t.pixels == pixels:
            return t.value
    raise ValueError(f"no tier has {pixels}-pixel pages")
