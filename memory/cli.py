"""The ``opticmem`` command line: ``demo``, ``ingest``, ``render``, ``inspect`` (and the
plugins' ``train``, ``eval``, ``worker``, ``queue``).

Every reporting command takes ``--json`` and then prints exactly one JSON object on
stdout (progress bars and logs go to stderr). Adding a command: write a function with
``@app.command()`` in this module, or put ``register(app: typer.Typer)`` in a module
listed in :data:`PLUGINS` (imported on start; absent modules are skipped) — e.g. the
encoder's ``train`` and ``eval``. Use :func:`report` for output so ``--json`` behaves the
same everywhere.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from opticmem import costs
from opticmem.codecs import CodecSpec, load_bundled_codec
from opticmem.context import Context
from opticmem.encoder.progress import progress_enabled
from opticmem.errors import (
    BudgetError,
    CodecError,
    CodecUnavailableError,
    InvalidSessionError,
    OpticMemError,
    StoreURLError,
)
from opticmem.memory import OpticalMemory
from opticmem.render import (
    ORDER,
    RenderSettings,
    layout_pages,
    parse_tiers,
    png_bytes,
    render_page,
)
from opticmem.render import TurnText as RenderTurn
from opticmem.render.layout import has_visible_text
from opticmem.sessions import validate_session
from opticmem.stores import redact_url
from opticmem.transcripts import (
    TranscriptEncodingError,
    TranscriptError,
    TranscriptTurn,
    read_transcript,
)


def _json_requested(args: Sequence[str], commands: Mapping[str, Any]) -> bool:
    """Whether a command line asks for ``--json``: as an option, not after ``--`` nor as
    the value of another option (``--store --json`` stores in a URL ``--json``, and its
    usage errors are typer's own, on stderr). ``commands``: the group's, by name; the
    options of the one named that take values are skipped with their values."""
    value_options: dict[str, int] | None = None  # until the command is named
    skip = 0
    for arg in args:
        if skip:
            skip -= 1
        elif arg == "--":
            return False
        elif arg == "--json":
            return True
        elif value_options is None:
            if arg in commands:
                value_options = _value_options(commands[arg])
        else:
            skip = value_options.get(arg, 0)
    return False


def _value_options(command: Any) -> dict[str, int]:
    """The option names of a click command that take values, with how many each takes."""
    names: dict[str, int] = {}
    for param in getattr(command, "params", ()):
        if getattr(param, "param_type_name", None) != "option" or param.is_flag or param.count:
            continue
        for name in (*param.opts, *param.secondary_opts):
            names[name] = max(1, param.nargs)
    return names


_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
"""The base of the usage errors typer raises: click's ``ClickException``, which newer
typers carry a copy of (``typer._click``) instead of importing click."""


class _Commands(TyperGroup):
    """The command group, whose usage errors honour ``--json``.

    Typer reports a bad option value (``--budget 0``), a missing argument or an unknown
    option itself, on stderr: with ``--json`` a script reading stdout got nothing, where
    every other failure gives it one ``{"error": …}`` object. With ``--json`` on the
    command line, such an error is that object too (exit 2, as typer's)."""

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None,
        complete_var: str | None = None, standalone_mode: bool = True, **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode or not _json_requested(argv, self.commands):
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except _USAGE_ERROR as exc:
            report({"error": exc.format_message()}, True)  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        except typer.Abort:
            report({"error": "aborted"}, True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="opticmem",
    help="Long-context memory for LLM agents with optical decay.",
    no_args_is_help=True,
    add_completion=False,
    cls=_Commands,
)

PLUGINS: tuple[str, ...] = ("opticmem.codec_commands", "opticmem.worker_commands")
"""Modules whose ``register(app)`` adds commands, when they are installed."""

# Markup and emoji codes off: what these print holds user strings (paths, session ids,
# roles such as "[/INST]") that Rich would read as tags — failing on an unmatched closing
# one — or as ":emoji:" codes. Styles are given as ``style=`` or :class:`Text` parts.
out = Console(markup=False, emoji=False)
err = Console(stderr=True, markup=False, emoji=False)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")]
StoreOpt = Annotated[
    str, typer.Option("--store", help="Store URL: sqlite:///file.db, memory://, redis://…")
]
BudgetOpt = Annotated[int, typer.Option("--budget", min=1, help="Context budget in tokens.")]
ModelOpt = Annotated[
    str, typer.Option("--cost-model", help="deepseek-ocr, deepseek-ocr-nominal, openai, anthropic")
]


def _session_id(value: str | None) -> str | None:
    """Typer callback of a session id given on the command line: one no session can have
    (``""``, a control character, over 256 characters) is a usage error (exit 2, before
    any store is opened), as any other bad argument value is, not a failure (exit 1)."""
    if value is None:
        return None
    try:
        return validate_session(value)
    except InvalidSessionError as exc:
        raise typer.BadParameter(str(exc)) from None


SAMPLE_CONVERSATION = "data/sample_conversation.jsonl"
SAMPLE_QUESTIONS = "data/sample_questions.json"


@app.callback()
def _tolerate_narrow_terminals() -> None:
    # Runs before every command (and its --help). A stdout whose encoding lacks a character
    # printed — PYTHONIOENCODING=ascii, a cp1252 console — would raise UnicodeEncodeError
    # midway, after ``ingest`` stored its turns: such characters are written as \uXXXX
    # instead, as Python's own stderr writes them.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if callable(reconfigure) and getattr(sys.stdout, "errors", None) == "strict":
        reconfigure(errors="backslashreplace")


def report(data: dict[str, Any], as_json: bool) -> None:
    """Print ``data`` as one JSON object when ``as_json`` (human output is the caller's).

    Non-ASCII characters are written as themselves where stdout can encode them and as
    JSON ``\\u`` escapes where it cannot, so the line is valid JSON either way."""
    if as_json:
        text = json.dumps(data, ensure_ascii=False, sort_keys=False)
        try:
            text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
        except (UnicodeEncodeError, LookupError):
            text = json.dumps(data, ensure_ascii=True, sort_keys=False)
        sys.stdout.write(text + "\n")


def fail(message: str, as_json: bool, code: int = 1) -> typer.Exit:
    """Report an error (as ``{"error": …}`` with ``--json``) and return the exit to raise."""
    if as_json:
        report({"error": message}, True)
    else:
        err.print(Text.assemble(("error:", "bold red"), " ", message))
    return typer.Exit(code)


def _turns(n: int) -> str:
    """``"1 turn"``, ``"3 turns"``."""
    return f"{n} turn" if n == 1 else f"{n} turns"


def bad_option(message: str, option: str | None, as_json: bool) -> Exception:
    """A usage error (exit 2): typer's own, or with ``--json`` the one JSON object
    ``{"error": …}`` every command prints then (a script reading stdout got nothing)."""
    if as_json:
        return fail(f"{option}: {message}" if option else message, as_json, code=2)
    return typer.BadParameter(message, param_hint=option)


def _check_cost_model(name: str, as_json: bool) -> None:
    """Refuse a ``--cost-model`` that names no preset as a usage error (exit 2), as a bad
    ``--codec`` or ``--tiers`` is; it was a failure (exit 1) found once the memory was
    being made."""
    try:
        costs.cost_model(name)
    except OpticMemError as exc:
        raise bad_option(str(exc), "--cost-model", as_json) from None


def bad_store_url(exc: Exception) -> bool:
    """Whether ``exc`` refuses a store URL as written (an unknown scheme, not a URL, an
    option the store does not take): a usage error (exit 2) when the URL came from the
    command line. A scheme whose backend is not installed (``redis://`` without the
    ``[redis]`` extra) is a :class:`StoreURLError` too, raised from the ImportError: that
    is the installation's failure (exit 1), not the user's typo."""
    return isinstance(exc, StoreURLError) and not isinstance(
        exc.__cause__, (ImportError, AttributeError))


def _library_failure(exc: Exception, as_json: bool) -> typer.Exit:
    """:func:`fail` with a library error a command with ``--budget`` ran into: a
    :class:`BudgetError` tells the user to raise ``budget_tokens``, which the command
    line calls ``--budget``, so the message says so."""
    if isinstance(exc, BudgetError):
        return fail(f"{exc} (here: --budget)", as_json)
    return fail(str(exc), as_json)


def check_device(device: str | None, as_json: bool) -> None:
    """Refuse a ``--device`` torch does not know or this machine lacks (exit 2), before
    the codec's weights are loaded onto it: ``meta`` (no data to read pages with) and a
    backend this torch was not built for (``mps``, ``xpu`` on Linux) included."""
    if device is None:
        return
    try:
        import torch

        dev = torch.device(device)
    except ImportError as exc:
        raise fail(f"this installation has no encoder: {exc}", as_json) from exc
    except (RuntimeError, ValueError) as exc:
        raise fail(f"--device {device}: not a device torch knows ({exc})", as_json,
                   code=2) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index is not None and dev.index >= count):
            raise fail(f"--device {device}: this machine has {count} CUDA device(s) that "
                       "torch can use", as_json, code=2)
        return
    if dev.type == "meta":
        raise fail(f"--device {device}: meta tensors hold no data, so no codec can read "
                   "pages there (use cpu or cuda)", as_json, code=2)
    try:  # other backends fail in their own ways (NotImplementedError, AssertionError…)
        torch.empty(0, device=dev)
    except Exception as exc:
        # torch's messages run to a screenful: its first sentence says what is missing
        first = str(exc).strip().split("\n")[0].split(". ")[0] or type(exc).__name__
        raise fail(f"--device {device}: torch cannot use it on this machine ({first})",
                   as_json, code=2) from None


@contextmanager
def interruptible(as_json: bool) -> Iterator[None]:
    """Turn Ctrl-C inside into exit 130 with a one-line error (one JSON object with
    ``--json``); typer would exit 130 silently, leaving a script reading stdout nothing."""
    try:
        yield
    except KeyboardInterrupt:
        raise fail("interrupted (Ctrl-C)", as_json, code=128 + signal.SIGINT) from None


def progress_console(console: Console, as_json: bool) -> tuple[Console, bool]:
    """The console to draw progress bars on, and whether to draw them (never with
    ``--json``; else as ``OPTICMEM_PROGRESS`` or a terminal decides).

    Rich draws no live display on a console that is not a terminal (and a transient one
    leaves nothing at all), so ``OPTICMEM_PROGRESS=1`` there gets a console on the same
    stream that draws as a terminal would."""
    enabled = not as_json and progress_enabled(console.is_terminal)
    if enabled and not console.is_terminal:
        console = Console(file=console.file, markup=False, emoji=False, force_terminal=True)
    return console, enabled


def _progress(as_json: bool) -> Progress:
    console, enabled = progress_console(err, as_json)
    return Progress(
        TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, disable=not enabled, transient=True,
    )


def _package_file(name: str) -> Path:
    return Path(str(resources.files("opticmem").joinpath(name)))


def _resolve_codec(choice: str, as_json: bool) -> tuple[CodecSpec, str]:
    """``bundled`` | ``none`` | ``random`` | a checkpoint directory → codec and a note."""
    if choice == "none":
        return None, "none (codec=None)"
    if choice == "bundled":
        try:
            codec = load_bundled_codec()
            return codec, f"bundled: {codec.name}"
        except CodecUnavailableError as exc:
            note = (f"The bundled codec's weights could not be loaded ({exc}). Running the "
                    "memory without a model (codec=None): pages are rendered and decay as "
                    "usual, recall searches the exact-facts sidecars only.")
            if not as_json:
                err.print(note, style="yellow")
            return None, f"unavailable ({exc}); running with codec=None"
    try:
        from opticmem.encoder import OCRCodec
    except (ImportError, AttributeError) as exc:
        raise _bad_codec(f"--codec {choice}: the encoder's OCRCodec is not available in "
                         f"this installation ({exc})", as_json) from exc
    if choice == "random":
        codec = OCRCodec.random("test", seed=0)
        if not as_json:
            err.print("Using a tiny randomly initialised codec: its readings are "
                      "meaningless; this exercises the code path only.", style="yellow")
        return codec, f"random: {codec.name}"
    path = Path(choice)
    if not path.is_dir():
        raise _bad_codec(f"--codec must be bundled, none, random or a checkpoint directory; "
                         f"{choice!r} is none of these", as_json)
    codec = OCRCodec.from_pretrained(path)
    return codec, f"checkpoint: {codec.name}"


def _bad_codec(message: str, as_json: bool) -> Exception:
    """A usage error (exit 2) about ``--codec``: typer's own, or with ``--json`` the one
    JSON object ``{"error": …}`` (typer's goes to stderr: stdout would hold nothing)."""
    if as_json:
        return fail(message, as_json, code=2)
    return typer.BadParameter(message)


def unreadable(path: Path, exc: OSError) -> str:
    """What to say of a file that exists but cannot be read (no permission, an I/O error)."""
    return f"cannot read {path}: {exc.strerror or exc}"


def _read_transcript(
    path: Path, as_json: bool, **kwargs: Any
) -> tuple[list[TranscriptTurn], list[TranscriptError]]:
    """:func:`read_transcript`, with a file that cannot be read (or is not UTF-8) reported
    as one error rather than a traceback."""
    try:
        return read_transcript(path, **kwargs)
    except OSError as exc:
        raise fail(unreadable(path, exc), as_json) from exc
    except TranscriptEncodingError as exc:
        raise fail(str(exc), as_json) from None


def _check_input(path: Path, as_json: bool) -> None:
    """Fail unless ``path`` is a file (a directory is named as one, not as missing)."""
    if path.is_dir():
        raise fail(f"{path} is a directory, not a file", as_json)
    if not path.is_file():
        raise fail(f"no such file: {path}", as_json)


def _check_sheet(sheet: Path | None, as_json: bool) -> None:
    """Fail before any work if a ``--sheet`` path cannot be written as an image."""
    if sheet is None:
        return
    from PIL import Image

    if sheet.suffix.lower() not in Image.registered_extensions():
        raise fail(f"--sheet {sheet}: unknown image extension {sheet.suffix!r} (use .png)",
                   as_json)
    problem = _sheet_format_problem(Image.registered_extensions()[sheet.suffix.lower()],
                                    sheet.suffix.lower())
    if problem:
        raise fail(f"--sheet {sheet}: {problem} (use .png)", as_json)
    if not sheet.parent.is_dir():
        raise fail(f"--sheet {sheet}: no directory {sheet.parent}", as_json)
    if sheet.is_dir():
        raise fail(f"--sheet {sheet}: a directory, not a file", as_json)
    try:  # a directory that takes no files: no permission, a read-only mount
        tempfile.TemporaryFile(dir=sheet.parent).close()
    except OSError as exc:
        raise fail(f"--sheet {sheet}: cannot write in {sheet.parent}: {exc.strerror or exc}",
                   as_json) from None


_SHEET_MODE = "L"
"""The mode of the contact sheets (greyscale: :func:`opticmem.render.sheet.contact_sheet`)."""

_PNM_MISNAMED = {".pbm": "a greyscale PGM", ".pfm": "a greyscale PGM"}
"""Extensions whose format Pillow writes a greyscale sheet as another one, named so."""


def _sheet_format_problem(fmt: str, suffix: str) -> str | None:
    """Why Pillow cannot write a contact sheet as ``fmt`` (what ``suffix`` names), or
    ``None``. Pillow knows more formats than it writes (``.psd``), writes some only in
    other modes (``.xbm``: black and white), some only with a plugin (``.h5``) and some
    at icon sizes (``.ico``: 256 pixels at most): found only at save time, after the whole
    replay. A small image of the sheet's mode is written in memory and read back."""
    import io

    from PIL import Image

    if suffix in _PNM_MISNAMED:
        return f"Pillow writes a contact sheet as {_PNM_MISNAMED[suffix]}, not as {suffix}"
    if fmt.upper() not in Image.SAVE:
        return f"Pillow reads {fmt} images but cannot write them"
    probe = Image.new(_SHEET_MODE, (48, 20), 255)
    buffer = io.BytesIO()
    try:
        probe.save(buffer, format=fmt)
    except Exception as exc:  # KeyError (no writer), OSError, ValueError: Pillow's reasons
        return f"Pillow cannot write a greyscale image as {fmt} ({exc or type(exc).__name__})"
    buffer.seek(0)
    try:
        size = Image.open(buffer).size
    except Exception:  # a format Pillow writes but does not read (PDF): nothing to compare
        return None
    if size != probe.size:
        return (f"Pillow writes {fmt} at other sizes than the image's (a 48×20 image came "
                f"back {size[0]}×{size[1]})")
    return None


def _save_sheet(image: Any, sheet: Path, as_json: bool) -> str:
    try:
        image.save(sheet)
    except (OSError, ValueError) as exc:
        raise fail(f"cannot write the contact sheet {sheet}: {exc}", as_json) from exc
    return str(sheet)


# --------------------------------------------------------------------------- tables


def _tier_rows(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    for tier in ORDER:
        ps = [p for p in ctx.pages if p.tier == tier]
        text_tokens = sum(p.text_tokens for p in ps)
        slots = tier.slots * len([p for p in ps if p.shown == "image"])
        rows.append({
            "tier": tier.value, "pages": len(ps), "cost": sum(p.cost for p in ps),
            "text_tokens": text_tokens, "as_text": sum(p.shown == "text" for p in ps),
            "compression": round(sum(p.text_tokens for p in ps if p.shown == "image") / slots, 2)
            if slots else None,
        })
    return rows


def _print_context(ctx: Context, title: str) -> None:
    t = Table(title=title, title_justify="left")
    for col in ("tier", "pages", "cost", "text tokens on pages", "compression", "shown as text"):
        t.add_column(col, justify="right" if col != "tier" else "left")
    for r in _tier_rows(ctx):
        comp = f"{r['compression']:.1f}×" if r["compression"] else "–"
        t.add_row(r["tier"], str(r["pages"]), str(r["cost"]), str(r["text_tokens"]), comp,
                  str(r["as_text"]))
    t.add_row("out (archived)", str(ctx.archived_pages), "0", "–", "–", "–")
    out.print(t)
    c = ctx.cost
    out.print(Text.assemble(
        "cost ", (str(int(c)), "bold"),
        f" / budget {c.budget}: verbatim turns {c.turns}, staging "
        f"{c.staging}, images {c.images}, page text {c.page_text}, overhead {c.overhead}"
        f"  ({len(ctx.turns)} turns verbatim, {ctx.demotions} demotions under pressure, "
        f"{ctx.dropped_turns} turns dropped)"))


# --------------------------------------------------------------------------- demo


@app.command()
def demo(
    budget: BudgetOpt = 8192,
    codec: Annotated[str, typer.Option(help="bundled, none, random, or a checkpoint dir")] = (
        "bundled"
    ),
    transcript: Annotated[
        Path | None, typer.Option(help="JSON-lines transcript (default: the bundled sample)")
    ] = None,
    questions: Annotated[
        Path | None, typer.Option(help="Questions JSON (default: the bundled sample's, "
                                       "asked of the bundled sample only)")
    ] = None,
    session: Annotated[str | None, typer.Option(
        help="Session to show (default: largest)", callback=_session_id)] = None,
    cost_model: ModelOpt = "deepseek-ocr",
    recalls: Annotated[int, typer.Option(min=0, help="How many questions to ask")] = 5,
    decode_max_tokens: Annotated[
        int | None, typer.Option(min=1, help="Cap on tokens the codec reads per page")
    ] = None,
    sheet: Annotated[Path | None, typer.Option(help="Also write a contact sheet PNG here")] = (
        None
    ),
    as_json: JsonFlag = False,
) -> None:
    """Replay the sample conversation through the memory and show what fits the budget."""
    _check_sheet(sheet, as_json)
    _check_cost_model(cost_model, as_json)
    # the sample's questions are about the sample: asked of the user's own transcript they
    # find nothing, or a page that happens to hold their turn number
    to_ask = ([] if questions is None and transcript is not None
              else _read_questions(questions, recalls, as_json))
    path = transcript or _package_file(SAMPLE_CONVERSATION)
    if not path.is_file():
        why = ("the sample conversation is not installed; pass --transcript FILE"
               if transcript is None else "a directory, not a file" if path.is_dir()
               else "no such file")  # the user's own path: a typo, not a broken install
        raise fail(f"no transcript at {path} ({why})", as_json)
    turns, errors = _read_transcript(path, as_json)
    if errors:
        raise fail(f"{path}: line {errors[0].line}: {errors[0].message}", as_json)
    if not turns:
        raise fail(f"{path} holds no turns", as_json)
    sessions: dict[str, list[TranscriptTurn]] = {}
    for t in turns:
        sessions.setdefault(t.session, []).append(t)
    sid = session if session is not None else max(sessions, key=lambda s: len(sessions[s]))
    if sid not in sessions:
        raise fail(f"session {sid!r} is not in {path}", as_json)
    with interruptible(as_json):  # loading the codec, replaying, reading back
        try:
            codec_spec, codec_note = _resolve_codec(codec, as_json)
            mem = OpticalMemory(budget_tokens=budget, codec=codec_spec, cost_model=cost_model,
                                decode_max_tokens=decode_max_tokens)
        except (OpticMemError, CodecError) as exc:  # --cost-model, a broken checkpoint --codec
            raise _library_failure(exc, as_json) from exc
        t0 = time.perf_counter()
        add_times = []
        base_ts = time.time() - len(sessions[sid]) * 60.0
        with _progress(as_json) as bar:
            task = bar.add_task(f"replaying {sid!r}", total=len(sessions[sid]))
            for i, t in enumerate(sessions[sid]):
                a = time.perf_counter()
                mem.add(sid, t.role, t.text, ts=t.ts if t.ts is not None else base_ts + 60.0 * i,
                        meta=t.meta)
                add_times.append(time.perf_counter() - a)
                bar.advance(task)
        replay_s = time.perf_counter() - t0
        a = time.perf_counter()
        try:
            ctx = mem.context(sid)
        except OpticMemError as exc:  # a --budget too small for the newest turn
            raise _library_failure(exc, as_json) from exc
        context_ms = (time.perf_counter() - a) * 1000
        recollect_s = 0.0
        if codec_spec is not None:
            a = time.perf_counter()
            with _progress(as_json) as bar:
                task = bar.add_task("reading pages back", total=len(ctx.pages))
                mem.recollect(sid, progress=lambda done, total: bar.update(task, completed=done,
                                                                               total=total))
            recollect_s = time.perf_counter() - a
        asked = _ask(mem, sid, to_ask)
        sheet_path = None
        if sheet is not None:
            from opticmem.inspection import decay_sheet

            sheet_path = _save_sheet(decay_sheet(mem, ctx), sheet, as_json)
    add_p50_ms = round(statistics.median(add_times) * 1000, 3)
    summary = {
        "command": "demo", "session": sid, "turn_count": len(sessions[sid]), "budget": budget,
        "cost": ctx.cost.as_dict(), "model": ctx.model, "pages_per_tier": ctx.pages_per_tier(),
        "compression": None if ctx.compression() is None else round(ctx.compression() or 0, 3),
        "tiers": _tier_rows(ctx), "codec": codec_note,
        "timings": {
            "replay_s": round(replay_s, 3),
            "add_p50_ms": add_p50_ms,
            "add_max_ms": round(max(add_times) * 1000, 3),
            "context_ms": round(context_ms, 3),
            "recollect_s": round(recollect_s, 3),
        },
        "recalls": asked, "sheet": sheet_path,
    }
    if as_json:
        report(summary, True)
        return
    out.print(Text.assemble(
        ("opticmem demo", "bold"),
        f" — session {sid!r}: {len(sessions[sid])} turns replayed in {replay_s:.2f}s "
        f"(add p50 {add_p50_ms} ms); codec: {codec_note}"))
    _print_context(ctx, f"Context make-up (budget {budget}, cost model {ctx.model})")
    if asked:
        table = Table(title="Recall", title_justify="left")
        for col in ("question", "best passage", "answer in passage", "answer's turn on page"):
            table.add_column(col)
        for r in asked:
            best = r["passages"][0] if r["passages"] else None
            where = (f"p{best['page_no']} turns {best['first_seq']}–{best['last_seq']} "
                     f"({best['source']}, {best['tier'] or 'exact'})") if best else "–"
            table.add_row(r["question"], where, "yes" if r["found_in_text"] else "no",
                          "yes" if r["turn_on_page"] else ("–" if r["turn_seq"] is None else "no"))
        out.print(table)
    out.print(f"context assembled in {context_ms:.2f} ms"
              + (f"; pages read back in {recollect_s:.1f}s" if recollect_s else ""))
    if sheet_path:
        out.print(f"contact sheet: {sheet_path}")


def _read_questions(path: Path | None, limit: int, as_json: bool) -> list[dict[str, Any]]:
    """The first ``limit`` questions of ``path`` (default: the bundled sample, skipped with a
    note if not installed), each checked, so that a bad file fails before the replay."""
    qpath = path or _package_file(SAMPLE_QUESTIONS)
    if limit == 0:
        return []
    if not qpath.is_file():
        if path is not None:
            raise fail(f"no questions file at {qpath}", as_json)
        if not as_json:
            err.print(f"no questions at {qpath}; skipping recall", style="yellow")
        return []
    try:
        items = json.loads(qpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read questions {qpath}: {exc}", as_json) from exc
    if not isinstance(items, list):
        raise fail(f"{qpath}: expected a JSON list of objects {{question, answer_contains?, "
                   f"turn_seq?}}, got {type(items).__name__}", as_json)
    for n, q in enumerate(items[:limit], start=1):
        problem = None
        if not isinstance(q, dict):
            problem = f"question {n} is not an object"
        elif not isinstance(q.get("question"), str):
            problem = f"question {n}: question must be a string"
        elif not isinstance(q.get("answer_contains", []), list) or not all(
                isinstance(a, str) for a in q.get("answer_contains", [])):  # null was "None"
            problem = f"question {n}: answer_contains must be a list of strings"
        elif q.get("turn_seq") is not None and (isinstance(q["turn_seq"], bool)
                                               or not isinstance(q["turn_seq"], int)):
            problem = f"question {n}: turn_seq must be a turn number or null"
        if problem:
            raise fail(f"{qpath}: {problem}", as_json)
    return items[:limit]


def _ask(mem: OpticalMemory, session: str, questions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    for q in questions:
        question = q["question"]
        want = [str(a) for a in q.get("answer_contains", [])]
        seq = q.get("turn_seq")
        a = time.perf_counter()
        passages = mem.recall(session, question, k=3)
        ms = (time.perf_counter() - a) * 1000
        found = any(w.lower() in p.text.lower() for p in passages for w in want) if want else False
        on_page = seq is not None and any(seq in p.seqs for p in passages)
        results.append({
            "question": question, "answer_contains": want, "turn_seq": seq,
            "found_in_text": found, "turn_on_page": on_page, "ms": round(ms, 3),
            "passages": [p.as_dict() for p in passages],
        })
    return results


# --------------------------------------------------------------------------- ingest


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="JSON lines: {session, role, text, ts?, meta?}")],
    store: StoreOpt = "sqlite:///opticmem.db",
    skip_invalid: Annotated[
        bool, typer.Option(help="Store the valid lines and report the bad ones")
    ] = False,
    default_session: Annotated[str, typer.Option(
        help="Session of lines without one", callback=_session_id)] = "default",
    append: Annotated[
        bool, typer.Option(help="Add to sessions that already hold turns in the store")
    ] = False,
    verbatim_turns: Annotated[int, typer.Option(
        min=1, help="Newest turns of each session left off pages: the verbatim_turns of "
                    "the bots that will use the store (turns older than that are sealed "
                    "onto pages now, and stay there)")] = 8,
    as_json: JsonFlag = False,
) -> None:
    """Load a transcript into a store (nothing is stored if a line is bad, unless
    --skip-invalid, or if a session already holds turns there, unless --append)."""
    _check_input(file, as_json)
    t0 = time.perf_counter()
    turns, errors = _read_transcript(file, as_json, default_session=default_session)
    if errors and not skip_invalid:
        shown = "; ".join(f"line {e.line}: {e.message}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise fail(f"{len(errors)} bad line(s), nothing stored: {shown}{more}", as_json)
    if not turns:  # "ingested 0 turns", exit 0, and an empty SQLite file made: as render
        # and demo do, say there was nothing to store (before the store is opened)
        why = (f"every line was skipped as bad (first, line {errors[0].line}: "
               f"{errors[0].message})" if errors else "it is empty, or blank lines only")
        raise fail(f"{file} holds no turns to ingest: {why}; nothing stored", as_json)
    try:
        mem = OpticalMemory(store, codec=None, verbatim_turns=verbatim_turns)
    except OpticMemError as exc:
        if bad_store_url(exc):
            raise bad_option(str(exc), "--store", as_json) from None
        raise fail(str(exc), as_json) from exc
    counts: dict[str, int] = {}
    pages_before: dict[str, int] = {}  # with --append, what each session held already
    with mem, _progress(as_json) as bar:
        if not append:  # running the same ingest twice would store every turn twice
            held = _sessions_holding_turns(mem, turns, store, as_json)
            if held:
                shown = ", ".join(f"{s!r} ({_turns(n)})" for s, n in held[:5])
                more = f" and {len(held) - 5} more" if len(held) > 5 else ""
                raise fail(f"{len(held)} session(s) already hold turns in "
                           f"{redact_url(store)}: {shown}"
                           f"{more}; nothing stored. Pass --append to add these turns "
                           f"after them", as_json)
        task = bar.add_task(f"ingesting {file.name}", total=len(turns))
        i = j = 0
        try:
            while i < len(turns):  # consecutive lines of one session go in one batch
                j = i
                while j < len(turns) and turns[j].session == turns[i].session and j - i < 1000:
                    j += 1
                sid = turns[i].session
                try:
                    if sid not in pages_before:
                        pages_before[sid] = mem.store.page_count(sid)
                    mem.add_many(sid, [t.as_input() for t in turns[i:j]])
                except OpticMemError as exc:  # the store failed (locked, gone): say so
                    raise fail(f"{exc}; {sum(counts.values())} of {len(turns)} turns were "
                               f"stored before it", as_json) from exc
                counts[sid] = counts.get(sid, 0) + (j - i)
                bar.advance(task, j - i)
                i = j
        except KeyboardInterrupt:  # typer would exit 130 silently, the store half filled
            shown = ", ".join(f"{s!r} ({_turns(n)})" for s, n in list(counts.items())[:5])
            # the batch in hand is stored whole or not at all, but may have been stored
            # (and the interrupt come while its pages were sealed)
            in_hand = (f"; the {_turns(j - i)} of {turns[i].session!r} being added then may "
                       f"be stored too" if i < j else "")
            raise fail(f"interrupted (Ctrl-C); {sum(counts.values())} of {len(turns)} turns "
                       f"were stored before it" + (f": {shown}" if shown else "") + in_hand,
                       as_json, code=128 + signal.SIGINT) from None
        totals = {s: {"turn_count": mem.store.turn_count(s), "page_count": mem.store.page_count(s)}
                  for s in counts}
    seconds = time.perf_counter() - t0
    # "turns", "sessions" and "pages" say what this run stored and sealed (with --append,
    # not what the sessions hold now: that is "session_totals", named as inspect names it)
    pages = {s: totals[s]["page_count"] - pages_before[s] for s in counts}
    summary = {
        "command": "ingest", "store": redact_url(store), "turns": len(turns), "sessions": counts,
        "pages": pages, "session_totals": totals,
        "skipped": [{"line": e.line, "error": e.message} for e in errors],
        "timings": {"seconds": round(seconds, 3)},
    }
    if as_json:
        report(summary, True)
        return
    held_turns = sum(t["turn_count"] for t in totals.values())
    held_pages = sum(t["page_count"] for t in totals.values())
    out.print(f"ingested {len(turns)} turns into {len(counts)} session(s) of "
              f"{redact_url(store)} in {seconds:.2f}s; pages sealed: {sum(pages.values())}"
              + (f" (the session(s) now hold {held_pages} pages, {held_turns} turns)"
                 if held_turns != len(turns) else ""))
    for e in errors:
        err.print(Text.assemble((f"skipped line {e.line}:", "yellow"), " ", e.message))


def _sessions_holding_turns(
    mem: OpticalMemory, turns: list[TranscriptTurn], store: str, as_json: bool
) -> list[tuple[str, int]]:
    """The sessions of ``turns`` that already hold turns in the store, with their counts."""
    held = []
    for sid in dict.fromkeys(t.session for t in turns):
        try:
            n = mem.store.turn_count(sid)
        except OpticMemError as exc:
            raise fail(f"{exc}; nothing stored", as_json) from exc
        if n:
            held.append((sid, n))
    return held


# --------------------------------------------------------------------------- render


TRANSCRIPT_SUFFIXES = (".jsonl", ".ndjson")
"""File name endings (in any case) ``render`` reads as a JSON-lines transcript, as ``eval
--text-file`` does: ``chat.ndjson`` or ``CHAT.JSONL`` was drawn as one user turn of raw
JSON."""


@app.command()
def render(
    file: Annotated[Path, typer.Argument(
        help="A .jsonl (or .ndjson) transcript, or any text file")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the PNGs")] = Path(
        "pages"
    ),
    tiers: Annotated[str, typer.Option(help="Comma-separated tiers, or 'all'")] = "all",
    role: Annotated[str, typer.Option(help="Role of a plain-text file's single turn")] = "user",
    timestamps: Annotated[bool, typer.Option(help="Draw timestamps before labels")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Render text or a transcript to page images, one PNG per page and tier."""
    _check_input(file, as_json)
    try:
        chosen = parse_tiers(tiers)
    except ValueError as exc:
        raise bad_option(str(exc), "--tiers", as_json) from None
    if file.suffix.lower() in TRANSCRIPT_SUFFIXES:
        turns, errors = _read_transcript(file, as_json)
        if errors:
            raise fail(f"{file}: line {errors[0].line}: {errors[0].message}", as_json)
        if not turns:  # it would "render 0 pages" and exit 0, as if all went well
            raise fail(f"{file} holds no turns to render", as_json)
        items = [RenderTurn(t.role, t.text, t.ts) for t in turns]
    else:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise fail(f"{file} is not valid UTF-8: {exc}", as_json) from exc
        except OSError as exc:
            raise fail(unreadable(file, exc), as_json) from exc
        if not has_visible_text(text):  # it would draw a page that reads only "User:"
            # (strip() kept U+200B, U+2060 and U+FEFF, which draw nothing)
            raise fail(f"{file} holds no text to render", as_json)
        items = [RenderTurn(role, text, None)]
    settings = RenderSettings(timestamps=timestamps)
    t0 = time.perf_counter()
    with interruptible(as_json):  # laying out a long text takes a while too
        pages = layout_pages(items, settings)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # --out names a file, or a place that cannot be written
        raise fail(f"cannot use --out {out_dir} as a directory: {exc}", as_json) from exc
    files: list[str] = []
    with interruptible(as_json), _progress(as_json) as bar:
        task = bar.add_task("rendering", total=len(pages) * len(chosen))
        for n, page in enumerate(pages):
            for tier in chosen:
                path = out_dir / f"page-{n:04d}-{tier.value}.png"
                try:
                    path.write_bytes(png_bytes(render_page(page, tier)))
                except OSError as exc:  # a full disk, a read-only mount, a directory there
                    raise fail(f"cannot write {path}: {exc.strerror or exc}; {len(files)} of "
                               f"{len(pages) * len(chosen)} files were written before it",
                               as_json) from exc
                files.append(str(path))
                bar.advance(task)
    stale = _remove_stale_pages(out_dir, set(files))
    seconds = time.perf_counter() - t0
    missing = sorted({c for p in pages for c in p.missing})
    summary = {
        "command": "render", "pages": len(pages), "tiers": [t.value for t in chosen],
        "files": files, "removed_stale": stale, "missing_glyphs": missing,
        "timings": {"seconds": round(seconds, 3),
                    "pages_per_second": round(len(pages) / seconds, 2) if seconds else None},
    }
    if as_json:
        report(summary, True)
        return
    out.print(f"rendered {len(pages)} page(s) × {len(chosen)} tier(s) into {out_dir} in "
              f"{seconds:.2f}s" + (f"; removed {len(stale)} page file(s) of an earlier run"
                                   if stale else ""))
    if missing:
        err.print(f"{len(missing)} character(s) have no glyph and show as boxes: "
                  f"{''.join(missing[:40])}", style="yellow")


_PAGE_FILE = re.compile(rf"page-\d{{4,}}-(?:{'|'.join(t.value for t in ORDER)})\.png")
"""The names ``render`` gives its page files: ``page-0007-small.png``."""


def _remove_stale_pages(out_dir: Path, written: set[str]) -> list[str]:
    """Delete the page PNGs in ``out_dir`` that this run did not write (an earlier run of
    a longer text, or of other tiers), so that the folder holds this text's pages only;
    files not named as ``render`` names them are left alone. Returns what was removed."""
    removed = []
    for path in sorted(out_dir.iterdir()):
        if _PAGE_FILE.fullmatch(path.name) and str(path) not in written and path.is_file():
            with suppress(OSError):  # gone meanwhile, or not ours to delete
                path.unlink()
                removed.append(str(path))
    return removed


# --------------------------------------------------------------------------- inspect


def _sqlite_path(store: str) -> Path | None:
    """The database file a ``sqlite:///…`` URL names, or ``None`` for other stores."""
    prefix = "sqlite:///"
    if not store.lower().startswith(prefix) or len(store) == len(prefix):
        return None
    return Path(store[len(prefix):].partition("?")[0])


@app.command()
def inspect(
    session: Annotated[str, typer.Argument(help="Session id", callback=_session_id)],
    store: StoreOpt = "sqlite:///opticmem.db",
    budget: BudgetOpt = 8192,
    cost_model: ModelOpt = "deepseek-ocr",
    sheet: Annotated[
        Path | None, typer.Option(help="Also write a contact sheet of the decay to this PNG")
    ] = None,
    crop: Annotated[
        float, typer.Option(min=0.05, max=1.0, help="Top-left fraction of each page shown")
    ] = 0.25,
    verbatim_turns: Annotated[int, typer.Option(
        min=1, help="Newest turns shown verbatim: the verbatim_turns of the bots that use "
                    "the store (as given to ingest)")] = 8,
    as_json: JsonFlag = False,
) -> None:
    """Show a session's pages and tiers (and with --sheet, a contact sheet of the decay);
    seals no page and keeps no decay mark in the store."""
    _check_sheet(sheet, as_json)
    _check_cost_model(cost_model, as_json)
    db = _sqlite_path(store)
    if db is not None and not db.is_file():  # opening it would create an empty database
        raise fail(f"no SQLite store at {db} (from --store {store})", as_json)
    try:
        mem = OpticalMemory(store, codec=None, budget_tokens=budget, cost_model=cost_model,
                            verbatim_turns=verbatim_turns)
    except OpticMemError as exc:
        if bad_store_url(exc):
            raise bad_option(str(exc), "--store", as_json) from None
        raise _library_failure(exc, as_json) from exc
    with mem:
        try:
            if mem.store.turn_count(session) == 0:
                raise fail(f"session {session!r} has no turns in {redact_url(store)}", as_json)
            t0 = time.perf_counter()
            # read-only: mem.context() would seal pages with this command's verbatim
            # window, taking turns off the verbatim window of a bot that keeps more
            ctx = mem._context(session, None, None, write=False)
            context_ms = (time.perf_counter() - t0) * 1000
        except OpticMemError as exc:  # a --budget too small for the newest turn, a store
            raise _library_failure(exc, as_json) from exc
        sheet_path = None
        if sheet is not None:
            from opticmem.inspection import decay_sheet

            sheet_path = _save_sheet(decay_sheet(mem, ctx, crop=crop), sheet, as_json)
        turns = mem.store.turn_count(session)
    summary = {
        "command": "inspect", "session": session, "store": redact_url(store), "turn_count": turns,
        **{k: v for k, v in ctx.as_dict().items() if k not in ("session",)},
        "tiers": _tier_rows(ctx), "sheet": sheet_path,
        "timings": {"context_ms": round(context_ms, 3)},
    }
    if as_json:
        report(summary, True)
        return
    t = Table(title=f"Session {session!r}: {turns} turns, {len(ctx.pages)} pages in context, "
                    f"{ctx.archived_pages} archived", title_justify="left")
    for col in ("page", "turns", "time", "tier", "shown", "cost", "text tokens", "facts"):
        t.add_column(col)
    for p in ctx.pages:
        t.add_row(str(p.page_no), f"{p.first_seq}–{p.last_seq}",
                  p.caption.split(" · ")[2], p.tier.value, p.shown, str(p.cost),
                  str(p.text_tokens), ", ".join(p.facts[:4]) + ("…" if len(p.facts) > 4 else ""))
    out.print(t)
    _print_context(ctx, "By tier")
    if sheet_path:
        out.print(f"contact sheet: {sheet_path}")


# --------------------------------------------------------------------------- plugins


def _load_plugins() -> None:
    for name in PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # not installed: that command set is simply absent
            logging.getLogger(__name__).warning("commands of %s unavailable: %s", name, exc)
            continue
        register = getattr(module, "register", None)
        if callable(register):
            register(app)


_load_plugins()


def main() -> None:  # pragma: no cover - console entry point alternative
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    app()
