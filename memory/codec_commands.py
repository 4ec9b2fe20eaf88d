"""The ``opticmem train`` and ``opticmem eval`` commands: build and measure the codec.

``train`` runs :func:`opticmem.encoder.train.train` (meant for a CUDA machine; resumable
from its ``--out`` directory) and can export shippable bf16 weights. ``eval`` renders
held-out pages — or the user's own text file — through the memory's renderer at every
tier, reads them back with a codec, and prints and writes the precision table and plot
(:mod:`opticmem.evaluation`).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, cast, get_args

import typer

from opticmem.encoder.train_limits import MAX_WORKERS
from opticmem.render import ORDER, RenderSettings, parse_tiers

ALL_TIERS = ",".join(tier.value for tier in ORDER)
MAX_EVAL_PAGES = 10_000
"""The most held-out pages of each kind ``eval`` draws (``--pages``, ``--hangul``). Every
page is drawn (some 10 ms each), held in memory and read back at every tier, so 10,000
chat pages are already 40,000 read-backs — hours even on a GPU — while ``--pages
10000000`` spent more than a day drawing pages before reading one."""
TRAIN_PRESETS = ("bundled", "test")
"""The presets ``train`` builds: not ``official``, the released 3.3B model (read with its
released weights, :mod:`opticmem.encoder.official`), which no machine here could train —
its float32 weights and AdamW moments alone are some 40 GB — with this trainer, data or
tokenizer."""


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``eval`` to the opticmem CLI."""
    app.command("train")(train_command)
    app.command("eval")(eval_command)


def _bad_option(message: str, option: str | None, as_json: bool) -> Exception:
    """:func:`opticmem.cli.bad_option` (imported when needed: the CLI loads this module)."""
    from opticmem.cli import bad_option

    return bad_option(message, option, as_json)


def unwritable_directory(path: Path) -> str | None:
    """Why ``path`` cannot be used as a directory to write in (``None`` when it can),
    checked without making it or leaving anything behind: a file there or at a folder
    above it, or a folder that takes no files (no permission, a read-only mount), probed
    with a temporary file in ``path`` or, while it does not exist, in the nearest folder
    above it that does (where it would be made). ``train`` found these only once its run
    had loaded its data (``--out``) or trained in full (``--export``), and ``eval`` once
    the codec was loaded."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot use {path} as a directory: {existing} is a file, not a directory"
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as exc:
        return (f"cannot use {path} as a directory: {existing} takes no files "
                f"({exc.strerror or exc})")
    return None


STATE_FOLDERS = ("state", "state.tmp", "state.old")
"""The folders of ``--out`` that a run's saves write, swap and delete
(:func:`~opticmem.encoder.train.save_training_state`)."""


def _resolved(path: Path) -> Path:
    """``path`` absolute with every symlink that exists on it followed (the rest of it
    taken as written), so two spellings of one folder compare equal."""
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare it as written
        return path.expanduser().absolute()


def overlapping_train_paths(out: Path, export: Path | None,
                            init_from: Path | None) -> tuple[str, str] | None:
    """``(option, why)`` when ``train``'s paths overlap so that one run would write over
    what it reads or keeps (``None`` when they do not), compared resolved
    (:func:`_resolved`: ``..``, symlinks):

    * ``--export`` at ``--out`` or at or under its state folders (:data:`STATE_FOLDERS`):
      the bf16 export would overwrite the run's float32 weights, or the next save would
      swap and delete it;
    * ``--export`` at ``--init-from``: the export would overwrite the weights the run
      started from;
    * ``--init-from`` at or under ``--out``'s state folders: the run's saves replace and
      delete them.

    Each was accepted and found only when the damage was done."""
    run = _resolved(out)
    states = [run / name for name in STATE_FOLDERS]
    start = _resolved(init_from) if init_from is not None else None
    if export is not None:
        target = _resolved(export)
        if target == run:
            return "--export", f"{export} is the run directory --out {out}"
        for state in states:
            if target.is_relative_to(state):
                return "--export", (f"{export} is inside the run's saved state {state} "
                                    "(the export would overwrite the run's weights)")
        if target == start:
            return "--export", (f"{export} is --init-from {init_from} (the export would "
                                "overwrite the weights the run starts from)")
    if start is not None:
        for state in states:
            if start.is_relative_to(state):
                return "--init-from", (f"{init_from} is inside the run's saved state {state} "
                                       "(the run's saves replace it)")
    return None


def train_command(
    out: Annotated[Path, typer.Option(help="Run directory (state, logs); resumed if present.")]
    = Path(".train"),
    minutes: Annotated[float, typer.Option(min=0.1, help="Minutes to train in this call.")] = 8.0,
    total_minutes: Annotated[
        float, typer.Option(min=0.1, help="Planned minutes over all resumed calls (schedule).")
    ] = 36.0,
    phase_start: Annotated[float, typer.Option(
        min=0.0, help="Training minutes where this cosine phase starts (a warm restart).")] = 0.0,
    peak_lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate.")] = 7e-4,
    pseudo_word_rate: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of words drawn as random letters.")] = 0.15,
    pseudo_symbol_rate: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of punctuation and symbols redrawn at random.")] = 0.0,
    tier_mix: Annotated[str | None, typer.Option(
        help="Share of pages drawn at each tier, e.g. large=0.1,base=0.1,small=0.5,tiny=0.3 "
             "(default 0.2/0.2/0.3/0.3).")] = None,
    batch_scale: Annotated[float, typer.Option(
        min=0.01, max=64.0, help="Pages per step at every tier, times this "
        "(default 24/32/48/48 at large/base/small/tiny).")] = 1.0,
    moe_dispatch: Annotated[str, typer.Option(
        help="How MoE layers run their experts in training: grouped (each expert on its "
             "tokens; waits for the GPU once per layer) or dense (every expert on every "
             "token; never waits).")] = "grouped",
    length_bucket: Annotated[int, typer.Option(
        min=0, help="Pad each step's decoder length up to a multiple of this (0: off), "
        "for --compile-decoder; losses are unchanged, the padding costs compute.")] = 0,
    compile_decoder: Annotated[bool, typer.Option(
        help="Compile the decoder layers for fixed shapes (one compile per tier and "
             "length bucket met); needs --length-bucket and --moe-dispatch dense.")] = False,
    preset: Annotated[str, typer.Option(
        help=f"Model preset: {' or '.join(TRAIN_PRESETS)}.")] = "bundled",
    workers: Annotated[int, typer.Option(
        min=0, max=MAX_WORKERS, help="Data-generating processes (0: none, the trainer "
        f"makes its own pages; at most {MAX_WORKERS}).")] = 14,
    init_from: Annotated[
        Path | None, typer.Option(help="Start from these weights when no state exists.")
    ] = None,
    export: Annotated[
        Path | None, typer.Option(help="Afterwards, write bf16 shards (≤ 16 MiB) here.")
    ] = None,
    seed: int = 1234,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Train (or continue training) the bundled codec on synthetic pages (GPU, bf16)."""
    import json
    import logging

    from opticmem.encoder.bundled import export_bundled
    from opticmem.encoder.checkpoint import read_config, read_index
    from opticmem.encoder.config import preset as preset_config
    from opticmem.encoder.errors import CheckpointError, ConfigError, InputError
    from opticmem.encoder.moe import TrainDispatch
    from opticmem.encoder.synth import SynthDataError
    from opticmem.encoder.train import TrainConfig, parse_tier_mix, scaled_batches, train

    for option, directory in (("--out", out), ("--export", export)):
        if directory is not None and (problem := unwritable_directory(directory)):
            raise _bad_option(problem, option, as_json)
    if overlap := overlapping_train_paths(out, export, init_from):
        raise _bad_option(overlap[1], overlap[0], as_json)
    for option, value in (("--minutes", minutes), ("--total-minutes", total_minutes),
                          ("--phase-start", phase_start), ("--peak-lr", peak_lr)):
        # typer's min lets inf through: inf minutes trained for ever, and an inf learning
        # rate turned every weight to NaN and saved them over the run's trained state
        if not math.isfinite(value):
            raise _bad_option(f"must be a finite number, got {value}", option, as_json)
    if not 0 <= seed < 2**64:  # found only in the data loader, after the model was built
        raise _bad_option(f"must be a whole number in 0 … 2**64 - 1, got {seed}", "--seed",
                          as_json)
    try:  # refuse bad arguments before a run directory is made or a model built
        preset_config(preset)
    except ConfigError as err:
        raise _bad_option(str(err), "--preset", as_json) from None
    if preset not in TRAIN_PRESETS:  # accepted although the help said "bundled or test"
        raise _bad_option(f"train takes preset {' or '.join(TRAIN_PRESETS)}, not {preset!r} "
                          "(the released 3.3B model, which is read, not trained here)",
                          "--preset", as_json)
    if init_from is not None:
        try:
            read_config(init_from)
            read_index(init_from)
        except CheckpointError as err:
            raise _bad_option(f"not a checkpoint directory: {err}", "--init-from",
                              as_json) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = TrainConfig(out_dir=out, minutes=minutes, total_minutes=total_minutes,
                      phase_start=phase_start, peak_lr=peak_lr, pseudo_word_rate=pseudo_word_rate,
                      pseudo_symbol_rate=pseudo_symbol_rate, preset=preset, workers=workers,
                      init_from=init_from, seed=seed, batch_pages=scaled_batches(batch_scale))
    if tier_mix is not None:
        try:
            cfg.tier_weights = parse_tier_mix(tier_mix, cfg.tiers_per_page)
        except InputError as err:
            raise _bad_option(str(err), "--tier-mix", as_json) from None
    if moe_dispatch not in get_args(TrainDispatch):
        raise _bad_option(f"{moe_dispatch!r} is not one of "
                          f"{', '.join(get_args(TrainDispatch))}", "--moe-dispatch", as_json)
    cfg.moe_dispatch = cast(TrainDispatch, moe_dispatch)
    if compile_decoder and not length_bucket:
        raise _bad_option("needs --length-bucket (fixed shapes)", "--compile-decoder", as_json)
    if compile_decoder and moe_dispatch != "dense":
        raise _bad_option("needs --moe-dispatch dense (grouped reads expert counts back to "
                          "the host inside the graph)", "--compile-decoder", as_json)
    cfg.length_bucket, cfg.compile_decoder = length_bucket, compile_decoder
    try:
        progress = train(cfg)
        summary: dict[str, Any] = {
            "command": "train", **{k: progress[k] for k in ("step", "pages", "minutes", "runs")}}
        summary["last"] = progress["log"][-1] if progress["log"] else None
        if export is not None:
            export_bundled(out / "state" / "model", export)
            summary["exported"] = str(export)
    except (CheckpointError, SynthDataError, InputError, OSError) as err:
        # a damaged state, weights of another preset, no text to train on (a wheel without
        # the synth extra), a setting train() refuses; a read-only --out, a full disk (a
        # save never replaces the last good state before it is written whole)
        from opticmem.cli import fail

        raise fail(str(err), as_json) from None
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(f"trained {summary['step']} steps, {summary['pages']} pages, "
                   f"{summary['minutes']:.1f} minutes in {summary['runs']} run(s)")


def eval_command(
    pages: Annotated[int, typer.Option(
        min=1, max=MAX_EVAL_PAGES, help=f"Held-out chat pages (at most {MAX_EVAL_PAGES:,}).")]
    = 32,
    hangul: Annotated[int, typer.Option(
        min=0, max=MAX_EVAL_PAGES, help=f"Held-out Hangul pages (at most {MAX_EVAL_PAGES:,}).")]
    = 8,
    text_file: Annotated[
        Path | None,
        typer.Option(help="Evaluate your own text instead: plain text, a User:/Assistant: "
                          "transcript, or JSON lines of {role, text}."),
    ] = None,
    codec: Annotated[str, typer.Option(help="bundled, or a checkpoint directory.")] = "bundled",
    tiers: Annotated[str, typer.Option(help="Comma-separated tiers, or 'all'.")] = ALL_TIERS,
    out: Annotated[Path, typer.Option(help="Directory for the tables, plot and read-back texts.")]
    = Path("opticmem-eval"),
    seed: Annotated[int, typer.Option(
        min=0, help="Seed of the held-out pages drawn (another seed, other pages; the "
                    "published table uses the default).")] = 31337,
    batch_size: Annotated[int, typer.Option(
        min=1, help="Pages encoded and decoded together.")] = 16,
    max_new_tokens: Annotated[int | None, typer.Option(
        min=1, help="Cap on the tokens read back per page (default: the codec's own).")]
    = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: best)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Measure how well a codec reads pages back at each tier (the decay curve)."""
    import json
    from dataclasses import asdict

    from rich.console import Console
    from rich.progress import Progress

    from opticmem.cli import check_device, interruptible, progress_console, unreadable
    from opticmem.encoder import synth
    from opticmem.encoder.bundled import load_bundled_codec
    from opticmem.encoder.codec import CodecError
    from opticmem.encoder.tokenizer import count_tokens
    from opticmem.evaluation import (
        evaluate,
        heldout_pages,
        markdown_table,
        summarise,
        write_results,
    )

    check_device(device, as_json)  # before any page is drawn
    if problem := unwritable_directory(out):  # found only after every page was read
        raise _bad_option(problem, "--out", as_json)
    try:
        tier_list = parse_tiers(tiers)
    except ValueError as exc:
        raise _bad_option(str(exc), "--tiers", as_json) from None
    settings = RenderSettings()
    if text_file is not None:
        if not text_file.is_file():
            raise _bad_option(f"{text_file} is not a file", "--text-file", as_json)
        try:
            chosen = synth.text_file_pages(text_file, settings)
        except UnicodeDecodeError as exc:
            raise _bad_option(f"{text_file} is not valid UTF-8 text (byte {exc.start})",
                              "--text-file", as_json) from None
        except ValueError as exc:  # a JSON line that is not an object with "text"
            raise _bad_option(str(exc), "--text-file", as_json) from None
        except OSError as exc:  # no permission to read it, an I/O error
            raise _bad_option(unreadable(text_file, exc), "--text-file", as_json) from None
        if not chosen:  # before the codec loads: U+200B alone was one page reading "User:"
            raise _bad_option(f"{text_file} has no visible text (it is empty, or only "
                              "whitespace or invisible characters such as U+200B)",
                              "--text-file", as_json)
        source = str(text_file)
    else:
        console, bars = progress_console(Console(stderr=True), as_json)
        with interruptible(as_json), Progress(console=console, disable=not bars) as bar:
            task = bar.add_task("drawing pages", total=pages + hangul)
            chat, korean = heldout_pages(pages, seed=seed, hangul=hangul, settings=settings,
                                         progress=lambda n: bar.advance(task, n))
        chosen = chat + korean
        source = f"synthetic eval split, seed {seed}"
    if not chosen:
        raise _bad_option("no pages to evaluate (empty text?)", None, as_json)
    with interruptible(as_json):
        try:
            model = load_bundled_codec(None if codec == "bundled" else Path(codec),
                                       device=device)
        except (CodecError, OSError) as exc:  # missing or corrupt weights, config, tokenizer
            raise _bad_option(str(exc), "--codec", as_json) from None
    model.batch_size = batch_size
    try:  # now, not after every page was read (changed since the check above)
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file on its path, no permission
        raise _bad_option(f"cannot use {out} as a directory: {exc.strerror or exc}", "--out",
                          as_json) from None
    console, bars = progress_console(Console(stderr=True), as_json)
    t0 = time.perf_counter()
    with interruptible(as_json), Progress(console=console, disable=not bars) as bar:
        task = bar.add_task("reading pages", total=len(chosen) * len(tier_list))
        scores = evaluate(model, chosen, count_tokens=count_tokens, tiers=tier_list,
                          batch_size=batch_size, max_new_tokens=max_new_tokens,
                          progress=lambda n: bar.advance(task, n))
    rows = summarise(scores)
    meta = {"codec": model.name, "source": source, "pages": len(chosen),
            "device": str(model.device),
            "tiers": [t.value for t in tier_list], "seconds": round(time.perf_counter() - t0, 1),
            "text_tokens": "bundled byte-level BPE tokens of the page transcript"}
    try:
        write_results(scores, out, meta)
    except OSError as exc:  # the disk filled up, the directory went away while reading
        from opticmem.cli import fail

        raise fail(f"cannot write the results to {out}: {exc.strerror or exc}",
                   as_json) from None
    if as_json:
        typer.echo(json.dumps({"command": "eval", "meta": meta,
                               "summary": [asdict(r) for r in rows]}))
    else:
        typer.echo(markdown_table(rows))
        typer.echo(f"\nwrote {out}/: eval.json, eval.md, precision_vs_compression.png, "
                   "readback.jsonl (each page's text and what was read) and misreads.md")
