"""The ``opticmem`` command line: each command, human and ``--json`` output, bad input."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from opticmem import OpticalMemory
from opticmem.cli import app
from opticmem.sqlite_store import SQLiteStore
from tests.memory.sample import write

runner = CliRunner()


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write(tmp_path_factory.mktemp("sample"), n=260)


def run_json(*args: str) -> dict[str, object]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stdout  # exactly one JSON object
    data: dict[str, object] = json.loads(lines[0])
    return data


def test_demo_json(sample: tuple[Path, Path]) -> None:
    conv, qs = sample
    d = run_json("demo", "--transcript", str(conv), "--questions", str(qs), "--budget", "4000",
                 "--codec", "none")
    assert d["command"] == "demo" and d["turn_count"] == 260 and d["budget"] == 4000
    cost = d["cost"]
    assert isinstance(cost, dict) and cost["total"] <= 4000
    per_tier = d["pages_per_tier"]
    assert isinstance(per_tier, dict) and sum(per_tier.values()) > 10
    assert d["codec"] == "none (codec=None)"
    recalls = d["recalls"]
    assert isinstance(recalls, list) and len(recalls) == 3
    assert all(r["found_in_text"] and r["turn_on_page"] for r in recalls)
    assert set(d["timings"]) >= {"replay_s", "add_p50_ms", "context_ms"}  # type: ignore[arg-type]


def test_demo_human_output_says_when_there_is_no_bundled_codec(
    sample: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken install (weights missing) still runs the demo, and says so plainly."""
    import opticmem.encoder.bundled as bundled

    def missing(*args: object, **kwargs: object) -> None:
        raise bundled.BundledWeightsError("bundled codec file missing: weights/config.json")

    monkeypatch.setattr(bundled, "load_bundled_codec", missing)
    conv, qs = sample
    sheet = tmp_path / "sheet.png"
    result = runner.invoke(app, ["demo", "--transcript", str(conv), "--questions", str(qs),
                                 "--sheet", str(sheet)])
    assert result.exit_code == 0, result.output
    assert "Context make-up" in result.stdout and "Recall" in result.stdout
    assert "The bundled codec's weights could not be loaded" in result.stderr
    assert "config.json" in result.stderr
    assert Image.open(sheet).size[0] > 1000


def test_demo_json_names_why_the_bundled_codec_could_not_load(
    sample: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Damaged weights (not missing ones) were reported as "no bundled weights"."""
    import opticmem.encoder.bundled as bundled

    def damaged(*args: object, **kwargs: object) -> None:
        raise bundled.BundledWeightsError("model-00002-of-00003.safetensors: SHA-256 mismatch")

    monkeypatch.setattr(bundled, "load_bundled_codec", damaged)
    conv, qs = sample
    result = runner.invoke(app, ["demo", "--transcript", str(conv), "--questions", str(qs),
                                 "--json"])
    assert result.exit_code == 0, result.output
    codec = json.loads(result.stdout)["codec"]
    assert "model-00002-of-00003.safetensors: SHA-256 mismatch" in codec
    assert "codec=None" in codec and "no bundled weights" not in codec


def test_demo_without_sample_fails_clearly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--transcript", str(tmp_path / "none.jsonl"),
                                 "--json"])
    assert result.exit_code == 1
    assert "no transcript" in json.loads(result.stdout)["error"]


def test_demo_names_a_missing_transcript_as_the_users_file(tmp_path: Path) -> None:
    """A --transcript typo was reported as "the sample conversation is not installed"."""
    for path, message in ((tmp_path / "typo.jsonl", "no such file"),
                          (tmp_path, "a directory, not a file")):
        error = _json_error(["demo", "--transcript", str(path), "--codec", "none"])
        assert message in error and "not installed" not in error, error


def test_demo_asks_the_sample_questions_only_of_the_sample(sample: tuple[Path, Path]) -> None:
    """`demo --transcript mine.jsonl` asked the bundled sample's questions (Project Titan's
    launch date, Mina's e-mail…) of the user's conversation, reporting "no" for each, or
    "yes, its turn is on a page" wherever the sample's turn number happened to be."""
    conv, qs = sample
    d = run_json("demo", "--transcript", str(conv), "--codec", "none")
    assert d["recalls"] == []
    result = runner.invoke(app, ["demo", "--transcript", str(conv), "--codec", "none"])
    assert result.exit_code == 0 and "Recall" not in result.stdout
    d = run_json("demo", "--transcript", str(conv), "--questions", str(qs), "--codec", "none")
    assert isinstance(d["recalls"], list) and len(d["recalls"]) == 3  # asked when given


def test_ingest_then_inspect(sample: tuple[Path, Path], tmp_path: Path) -> None:
    conv, _ = sample
    url = f"sqlite:///{tmp_path}/m.db"
    d = run_json("ingest", str(conv), "--store", url)
    assert d["turns"] == 260 and d["sessions"] == {"team": 260} and d["skipped"] == []
    pages = d["pages"]
    assert isinstance(pages, dict) and pages["team"] > 10
    sheet = tmp_path / "decay.png"
    d = run_json("inspect", "team", "--store", url, "--budget", "3000", "--sheet", str(sheet))
    assert d["turn_count"] == 260 and d["budget"] == 3000
    assert isinstance(d["cost"], dict) and d["cost"]["total"] <= 3000
    assert d["sheet"] == str(sheet) and Image.open(sheet).mode == "L"
    result = runner.invoke(app, ["inspect", "team", "--store", url, "--sheet", str(sheet)])
    assert result.exit_code == 0 and "By tier" in result.stdout
    result = runner.invoke(app, ["inspect", "nobody", "--store", url, "--json"])
    assert result.exit_code == 1 and "no turns" in json.loads(result.stdout)["error"]
    # the library's BudgetError names budget_tokens; the command's option is --budget
    assert "(here: --budget)" in _json_error(["inspect", "team", "--store", url, "--budget", "5"])
    for command in ("ingest", "render"):  # a directory was reported as "no such file"
        assert "is a directory, not a file" in _json_error([command, str(tmp_path)])


def test_ingest_seals_pages_with_the_bots_verbatim_window(
        sample: tuple[Path, Path], tmp_path: Path) -> None:
    """ingest sealed with a window of 8: a bot keeping its newest 30 turns verbatim found
    22 of them already on pages, decaying. --verbatim-turns leaves them off pages."""
    conv, _ = sample
    for window, url in ((8, f"sqlite:///{tmp_path}/a.db"), (30, f"sqlite:///{tmp_path}/b.db")):
        args = ("--verbatim-turns", str(window)) if window != 8 else ()
        run_json("ingest", str(conv), "--store", url, *args)
        with OpticalMemory(url, codec=None, verbatim_turns=30) as mem:
            shown = len(mem.context("team", budget_tokens=100_000).turns)
        assert (shown >= 30) == (window == 30), (window, shown)
    bad = runner.invoke(app, ["ingest", str(conv), "--verbatim-turns", "0", "--json"])
    assert bad.exit_code == 2 and "--verbatim-turns" in json.loads(bad.stdout)["error"]


def test_ingest_refuses_bad_lines_and_stores_nothing(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b'{"session": "a", "role": "user", "text": "fine"}\n'
                    b'{"session": "a", "role": "robot", "text": "beep"}\n'
                    b'not json\n'
                    b'{"session": "a", "role": "user", "text": "bad \xff utf8"}\n'
                    b'{"session": "a", "role": "user", "text": "late", '
                    b'"ts": "2026-03-01T09:00Z"}\n')
    db = tmp_path / "m.db"
    result = runner.invoke(app, ["ingest", str(src), "--store", f"sqlite:///{db}", "--json"])
    assert result.exit_code == 1
    err = json.loads(result.stdout)["error"]
    assert "3 bad line(s), nothing stored" in err and "line 2" in err and "line 4" in err
    assert not db.exists() or SQLiteStore(db).turn_count("a") == 0
    d = run_json("ingest", str(src), "--store", f"sqlite:///{db}", "--skip-invalid")
    assert d["turns"] == 2 and [s["line"] for s in d["skipped"]] == [2, 3, 4]  # type: ignore[union-attr, index]
    with SQLiteStore(db) as s:
        assert [t.text for t in s.get_turns("a", 0, 9)] == ["fine", "late"]
        assert s.get_turns("a", 1, 2)[0].ts == 1772355600.0


def _two_sessions_failing_on_b(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               error: BaseException) -> tuple[Path, Path]:
    """``(transcript, db)``: a transcript of sessions "a" and "b", one turn each, to ingest
    while adding session "b" raises ``error``."""
    from opticmem.memory import OpticalMemory

    real_add_many = OpticalMemory.add_many

    def add_many(self: OpticalMemory, session: str, *args: object, **kwargs: object) -> object:
        if session == "b":
            raise error
        return real_add_many(self, session, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(OpticalMemory, "add_many", add_many)
    src = tmp_path / "two.jsonl"
    src.write_text('{"session": "a", "role": "user", "text": "first"}\n'
                   '{"session": "b", "role": "user", "text": "second"}\n')
    return src, tmp_path / "m.db"


def test_ingest_reports_a_store_that_fails_midway_and_what_it_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store error while adding (SQLite locked by another writer for its whole busy
    timeout, Redis gone) ended ingest in a traceback, not saying the sessions before it
    were already stored."""
    from opticmem.errors import StoreUnavailableError

    src, db = _two_sessions_failing_on_b(
        tmp_path, monkeypatch, StoreUnavailableError("SQLite store m.db: database is locked"))
    message = _json_error(["ingest", str(src), "--store", f"sqlite:///{db}"])
    assert "database is locked" in message and "1 of 2 turns were stored" in message
    with SQLiteStore(db) as s:
        assert s.turn_count("a") == 1 and s.turn_count("b") == 0


def test_ctrl_c_during_ingest_exits_130_saying_what_was_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C midway through a long ingest exited 130 with nothing on stdout or stderr,
    leaving the sessions before it stored (and a rerun refused) without a word."""
    src, db = _two_sessions_failing_on_b(tmp_path, monkeypatch, KeyboardInterrupt())
    result = runner.invoke(app, ["ingest", str(src), "--store", f"sqlite:///{db}", "--json"])
    assert result.exit_code == 130, result.output
    message = json.loads(result.stdout)["error"]
    assert message == ("interrupted (Ctrl-C); 1 of 2 turns were stored before it: 'a' (1 "
                       "turn); the 1 turn of 'b' being added then may be stored too")
    result = runner.invoke(app, ["ingest", str(src), "--store", f"sqlite:///{tmp_path}/n.db"])
    assert result.exit_code == 130 and "interrupted (Ctrl-C)" in result.stderr


def test_ingesting_a_file_again_is_refused_unless_appending(tmp_path: Path) -> None:
    """Running the same ingest twice stored every turn a second time, silently."""
    src = tmp_path / "chat.jsonl"
    src.write_text('{"session": "a", "role": "user", "text": "first"}\n'
                   '{"session": "b", "role": "user", "text": "second"}\n')
    db = tmp_path / "m.db"
    run_json("ingest", str(src), "--store", f"sqlite:///{db}")
    message = _json_error(["ingest", str(src), "--store", f"sqlite:///{db}"])
    assert "2 session(s) already hold turns" in message and "'a' (1 turn)" in message
    assert "nothing stored" in message and "--append" in message
    with SQLiteStore(db) as s:
        assert s.turn_count("a") == 1 and s.turn_count("b") == 1
    d = run_json("ingest", str(src), "--store", f"sqlite:///{db}", "--append")
    assert d["turns"] == 2
    with SQLiteStore(db) as s:
        assert [t.text for t in s.get_turns("a", 0, 9)] == ["first", "first"]


def test_inspect_changes_nothing_in_the_store(tmp_path: Path) -> None:
    """inspect assembled its context with OpticalMemory.context, which seals pages with
    the command's own verbatim window (8): a bot keeping its newest 30 turns verbatim
    found most of them put onto pages (shown as images, decaying) by a look at its
    session; and under --budget pressure a decay mark was kept for the command."""
    from opticmem.memory import OpticalMemory

    db = tmp_path / "m.db"
    with OpticalMemory(f"sqlite:///{db}", codec=None, verbatim_turns=30) as bot:
        for i in range(80):
            bot.add("bot", "user", f"turn {i}: " + "planning the launch " * 15)
        pages = bot.store.page_count("bot")
        shown = [t.seq for t in bot.context("bot").turns]
    assert pages > 0 and shown[-30:] == list(range(50, 80))
    for budget in ("8192", "300"):
        d = run_json("inspect", "bot", "--store", f"sqlite:///{db}", "--budget", budget)
        assert d["turn_count"] == 80
    assert d["demotions"] != 0  # under pressure: a mark to keep
    with OpticalMemory(f"sqlite:///{db}", codec=None, verbatim_turns=30) as bot:
        assert bot.store.page_count("bot") == pages
        assert [t.seq for t in bot.context("bot").turns] == shown
    with OpticalMemory(f"sqlite:///{db}", codec=None) as like_inspect:
        assert like_inspect.store.get_state("bot", like_inspect._mark_key(300)) is None



def test_inspect_shows_the_context_of_bots_with_another_verbatim_window(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """ingest takes --verbatim-turns (the window of the bots that will use the store) but
    inspect had none: it always assembled the context with a window of 8, so for a store
    ingested with --verbatim-turns 2 it showed a cost split (verbatim turns, staging)
    that no bot using the store sees, without a word."""
    from opticmem.memory import OpticalMemory

    conv, _ = sample
    url = f"sqlite:///{tmp_path}/m.db"
    run_json("ingest", str(conv), "--store", url, "--verbatim-turns", "2")
    d = run_json("inspect", "team", "--store", url, "--verbatim-turns", "2")
    with OpticalMemory(url, codec=None, verbatim_turns=2) as bot:
        ctx = bot.context("team")
    assert d["cost"] == ctx.cost.as_dict()
    assert d["pages_per_tier"] == ctx.pages_per_tier()
    assert d["cost"] != run_json("inspect", "team", "--store", url)["cost"]  # window 8


def test_inspect_writes_a_sheet_only_when_asked(
    sample: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inspect wrote ./contact_sheet.png into whatever folder it ran in, every time."""
    conv, _ = sample
    url = f"sqlite:///{tmp_path}/m.db"
    run_json("ingest", str(conv), "--store", url)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    d = run_json("inspect", "team", "--store", url)
    assert d["sheet"] is None and list(work.iterdir()) == []


def test_ingest_takes_a_file_with_a_byte_order_mark_and_crlf_lines(tmp_path: Path) -> None:
    """Windows tools write UTF-8 with a BOM; its first line used to be refused as bad JSON,
    and with it the whole ingest."""
    src = tmp_path / "bom.jsonl"
    src.write_bytes(b'\xef\xbb\xbf{"session": "a", "role": "user", "text": "first"}\r\n'
                    b'{"session": "a", "role": "assistant", "text": "second"}\r\n')
    db = tmp_path / "m.db"
    d = run_json("ingest", str(src), "--store", f"sqlite:///{db}")
    assert d["turns"] == 2 and d["skipped"] == []
    with SQLiteStore(db) as s:
        assert [t.text for t in s.get_turns("a", 0, 9)] == ["first", "second"]


@pytest.mark.parametrize(("encoding", "bom", "named"), [
    ("utf-16-le", b"\xff\xfe", "UTF-16 (with a byte order mark)"),  # PowerShell's `>`
    ("utf-16-be", b"\xfe\xff", "UTF-16 (with a byte order mark)"),
    ("utf-16-le", b"", "UTF-16LE"),
    ("utf-32-le", b"\xff\xfe\x00\x00", "UTF-32 (with a byte order mark)"),
])
def test_a_utf16_transcript_is_one_error_naming_its_encoding(
    tmp_path: Path, encoding: str, bom: bytes, named: str
) -> None:
    """Each line of a UTF-16 file was reported as "not valid UTF-8" or as bad JSON (with
    --skip-invalid: "ingested 0 turns", exit 0); the file is one error, which says what
    it is and how to save it as UTF-8. render and demo read transcripts the same way."""
    src = tmp_path / "chat.jsonl"
    src.write_bytes(bom + '{"role": "user", "text": "hi"}\r\n'
                          '{"role": "assistant", "text": "yo"}\r\n'.encode(encoding))
    db = tmp_path / "m.db"
    for args in (["ingest", str(src), "--store", f"sqlite:///{db}", "--skip-invalid"],
                 ["render", str(src), "--out", str(tmp_path / "pages")],
                 ["demo", "--transcript", str(src), "--codec", "none"]):
        message = _json_error(args)
        assert message == (f"{src} is {named}, not UTF-8: a transcript is UTF-8 JSON lines. "
                           f"Save it as UTF-8 (PowerShell: Out-File -Encoding utf8, or iconv "
                           f"-f {encoding[:6].upper()} -t UTF-8)"), args
    assert not db.exists() and not (tmp_path / "pages").exists()


@pytest.mark.parametrize(("content", "why"), [
    ("", "it is empty, or blank lines only"),
    ("\n  \r\n", "it is empty, or blank lines only"),
    ('{"role": "robot", "text": "beep"}\n[1]\n',
     "every line was skipped as bad (first, line 1: unknown role 'robot'"),
])
def test_ingest_of_a_transcript_with_no_turns_fails_and_makes_no_store(
    tmp_path: Path, content: str, why: str
) -> None:
    """An empty file (or one whose every line --skip-invalid skipped) was "ingested 0
    turns", exit 0, and left an empty SQLite file, where render and demo refuse a
    transcript with no turns."""
    src = tmp_path / "chat.jsonl"
    src.write_text(content)
    db = tmp_path / "m.db"
    message = _json_error(["ingest", str(src), "--store", f"sqlite:///{db}", "--skip-invalid"])
    assert message.startswith(f"{src} holds no turns to ingest: {why}"), message
    assert message.endswith("; nothing stored") and not db.exists()


def test_human_output_prints_brackets_and_colons_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rich took user strings for markup: a role like Llama's "[/INST]" in a skipped line
    (after the valid ones were stored) or a session id "[/s]" ended the command in a
    MarkupError traceback, "[red]" vanished and ":ok:" turned into an emoji."""
    monkeypatch.setenv("OPTICMEM_PROGRESS", "1")  # the bars' descriptions too
    src = tmp_path / "chat.jsonl"
    src.write_text('{"session": "[/s]", "role": "user", "text": "hi [red]:ok:"}\n'
                   '{"session": "[/s]", "role": "[/INST]", "text": "hello"}\n')
    url = f"sqlite:///{tmp_path}/m.db"
    result = runner.invoke(app, ["ingest", str(src), "--store", url, "--skip-invalid"])
    assert result.exit_code == 0, result.output
    assert "'[/INST]'" in result.stderr
    result = runner.invoke(app, ["inspect", "[/s]", "--store", url,
                                 "--sheet", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert "Session '[/s]'" in result.stdout
    result = runner.invoke(app, ["inspect", "[red]:ok:", "--store", url])
    assert result.exit_code == 1 and "session '[red]:ok:' has no turns" in result.stderr


def test_a_stdout_that_cannot_encode_hangul_or_emoji_gets_escapes_not_a_traceback(
    tmp_path: Path,
) -> None:
    """Under PYTHONIOENCODING=ascii (or a cp1252 console) ``ingest --json`` stored its turns
    and then died in a UnicodeEncodeError printing the session's name (a rerun was then
    refused: the session already held them); human tables and ``worker --help`` (its
    "redis://…") died the same way."""
    ascii_runner = CliRunner(charset="ascii")
    src = tmp_path / "k.jsonl"
    src.write_text('{"session": "한국😀", "role": "user", "text": "안녕 😀 – ×"}\n',
                   encoding="utf-8")
    url = f"sqlite:///{tmp_path}/m.db"
    result = ascii_runner.invoke(app, ["ingest", str(src), "--store", url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sessions"] == {"한국😀": 1}
    result = ascii_runner.invoke(app, ["inspect", "한국😀", "--store", url])
    assert result.exit_code == 0, result.output
    assert "Session '\\ud55c\\uad6d\\U0001f600'" in result.stdout
    result = ascii_runner.invoke(app, ["worker", "--help"])
    assert result.exit_code == 0, result.output
    assert "redis://\\u2026" in result.stdout


def test_render_text_and_transcript(sample: tuple[Path, Path], tmp_path: Path) -> None:
    conv, _ = sample
    d = run_json("render", str(conv), "--out", str(tmp_path / "p"), "--tiers", "large,tiny")
    assert isinstance(d["pages"], int) and d["pages"] > 10 and d["tiers"] == ["large", "tiny"]
    files = d["files"]
    assert isinstance(files, list) and len(files) == 2 * d["pages"]
    assert Image.open(files[1]).size == (512, 512)
    txt = tmp_path / "note.txt"
    txt.write_text("hello 😀 \x07 world " * 10, encoding="utf-8")
    d = run_json("render", str(txt), "--out", str(tmp_path / "q"))
    assert d["pages"] == 1 and len(d["files"]) == 4  # type: ignore[arg-type]
    result = runner.invoke(app, ["render", str(txt), "--tiers", "huge", "--json"])
    assert result.exit_code == 2 and "unknown tier" in result.stdout  # usage, as eval's
    # a tier named twice wrote every file twice (as eval read every page twice)
    d = run_json("render", str(txt), "--out", str(tmp_path / "r"), "--tiers", "tiny, TINY,")
    assert d["tiers"] == ["tiny"] and len(d["files"]) == 1  # type: ignore[arg-type]
    result = runner.invoke(app, ["render", str(txt), "--tiers", " , ", "--json"])
    assert result.exit_code == 2 and "no tiers given" in result.stdout


def test_render_reads_ndjson_and_upper_case_suffixes_as_transcripts(tmp_path: Path) -> None:
    """Only a name ending exactly in ".jsonl" was read as a transcript: chat.ndjson (which
    eval --text-file reads as one) or CHAT.JSONL was drawn as one user turn of raw JSON."""
    line = '{"role": "assistant", "text": "Ticket TITAN-142 ships on 2026-03-04."}\n'
    pngs = []
    for name in ("chat.jsonl", "chat.ndjson", "CHAT.JSONL"):
        src = tmp_path / name
        src.write_text(line, encoding="utf-8")
        d = run_json("render", str(src), "--out", str(tmp_path / f"p-{name}"),
                     "--tiers", "large")
        assert d["pages"] == 1
        pngs.append(Path(d["files"][0]).read_bytes())  # type: ignore[index]
    assert pngs[1] == pngs[0] and pngs[2] == pngs[0]


def test_render_into_a_used_folder_leaves_this_texts_pages_only(
        sample: tuple[Path, Path], tmp_path: Path) -> None:
    """Pages of an earlier, longer run stayed beside the new ones, as if the text had them;
    files render does not name as it names pages stay."""
    conv, _ = sample
    out = tmp_path / "p"
    before = run_json("render", str(conv), "--out", str(out))
    (out / "notes.png").write_bytes(b"mine")
    (out / "page-0001-large.png.bak").write_bytes(b"mine too")
    txt = tmp_path / "note.txt"
    txt.write_text("a short note", encoding="utf-8")
    after = run_json("render", str(txt), "--out", str(out), "--tiers", "small")
    assert after["files"] == [str(out / "page-0000-small.png")]
    stale = after["removed_stale"]
    assert isinstance(stale, list) and len(stale) == len(before["files"]) - 1  # type: ignore[arg-type]
    assert sorted(p.name for p in out.iterdir()) == [
        "notes.png", "page-0000-small.png", "page-0001-large.png.bak"]


def test_render_reports_a_page_file_it_cannot_write(tmp_path: Path) -> None:
    """A page that could not be written (a read-only mount, a full disk, a directory of
    that name) ended render in a FileNotFoundError/IsADirectoryError traceback."""
    txt = tmp_path / "note.txt"
    txt.write_text("hello world", encoding="utf-8")
    out = tmp_path / "pages"
    (out / "page-0000-base.png").mkdir(parents=True)
    message = _json_error(["render", str(txt), "--out", str(out)])
    assert message.startswith(f"cannot write {out / 'page-0000-base.png'}: ")
    assert message.endswith("1 of 4 files were written before it")
    result = runner.invoke(app, ["render", str(txt), "--out", str(out)])
    assert result.exit_code == 1 and "cannot write" in result.stderr


@pytest.mark.parametrize(("name", "blank", "message"), [
    # drawn as a page reading only "User:", a page the memory never makes (it refuses
    # empty turns); eval already said there was nothing
    ("blank.txt", " \n\t\n", "holds no text to render"),
    # invisible characters only: strip() kept them, and a page reading "User:" was drawn
    ("invisible.txt", "\ufeff\u200b\n\u2060 \u200b\n", "holds no text to render"),
    # "rendered 0 page(s)" and exited 0, as if it had worked
    ("empty.jsonl", "\n \n\n", "holds no turns to render"),
])
def test_render_refuses_a_file_with_nothing_to_render(
        tmp_path: Path, name: str, blank: str, message: str) -> None:
    for content in ("", blank):
        src = tmp_path / name
        src.write_text(content, encoding="utf-8")
        assert _json_error(["render", str(src), "--out", str(tmp_path / "p")]) == (
            f"{src} {message}")
        assert not (tmp_path / "p").exists()


def test_ctrl_c_during_render_exits_130_with_one_json_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a long text was rendered exited 130 silently: nothing on stdout."""
    txt = tmp_path / "note.txt"
    txt.write_text("hello world", encoding="utf-8")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    for where in ("opticmem.cli.layout_pages", "opticmem.cli.render_page"):
        with monkeypatch.context() as m:
            m.setattr(where, interrupted)
            result = runner.invoke(app, ["render", str(txt), "--out", str(tmp_path / "p"),
                                         "--json"])
        assert result.exit_code == 130, (where, result.output)
        assert json.loads(result.stdout) == {"error": "interrupted (Ctrl-C)"}


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("demo", "ingest", "render", "inspect"):
        assert cmd in result.stdout


def _json_error(args: list[str], code: int = 1) -> str:
    """Run a command with --json that must fail cleanly: exit ``code`` (1: a failure, 2: a
    usage error), one JSON error object."""
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    message: str = json.loads(result.stdout)["error"]
    return message


def test_demo_reports_bad_options_instead_of_a_traceback(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """An unknown --cost-model, a --budget below the newest turn and a broken checkpoint
    --codec used to end the demo in a traceback."""
    conv, _ = sample
    base = ["demo", "--transcript", str(conv), "--recalls", "0"]
    assert "unknown cost model 'gpt4'" in _json_error([*base, "--codec", "none",
                                                       "--cost-model", "gpt4"], code=2)
    assert "cannot hold even the newest turn" in _json_error([*base, "--codec", "none",
                                                              "--budget", "5"])
    broken = tmp_path / "ckpt"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    assert "config.json" in _json_error([*base, "--codec", str(broken)])


def test_demo_names_its_budget_option_when_the_budget_is_too_small(
    sample: tuple[Path, Path],
) -> None:
    """demo said only "raise budget_tokens" (the library's name), where inspect adds the
    option the user sets it with."""
    conv, _ = sample
    base = ["demo", "--transcript", str(conv), "--recalls", "0", "--codec", "none",
            "--budget", "5"]
    error = _json_error(base)
    assert re.search(r"raise budget_tokens to at least \d+ \(here: --budget\)$", error), error
    result = runner.invoke(app, base)  # without --json: on stderr
    assert result.exit_code == 1 and "(here: --budget)" in " ".join(result.stderr.split())


def test_demo_codec_that_is_neither_a_choice_nor_a_directory_is_a_usage_error(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """With --json it printed nothing on stdout (typer's usage box went to stderr)."""
    conv, _ = sample
    args = ["demo", "--transcript", str(conv), "--recalls", "0",
            "--codec", str(tmp_path / "no-such-ckpt")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "is none of these" in result.output, result.output
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 2, result.output
    assert "is none of these" in json.loads(result.stdout)["error"]


def test_ctrl_c_during_the_demo_exits_130_with_one_json_error(
    sample: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Typer turned Ctrl-C into a silent exit 130: with --json, stdout held nothing."""
    from opticmem.memory import OpticalMemory

    conv, _ = sample
    calls = []

    def add(self: OpticalMemory, *args: object, **kwargs: object) -> None:
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(OpticalMemory, "add", add)
    args = ["demo", "--transcript", str(conv), "--codec", "none", "--recalls", "0"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 130, result.output
    assert "interrupted" in json.loads(result.stdout)["error"]
    calls.clear()
    result = runner.invoke(app, args)
    assert result.exit_code == 130 and "interrupted" in result.stderr, result.output


@pytest.mark.parametrize(("content", "message"), [
    (None, "no questions file"),  # was skipped silently: the demo "passed" without recalls
    ('{"question": "x"}', "a JSON list of objects"),  # were tracebacks from here on
    ('["When is it due?"]', "question 1 is not an object"),
    ('[{"question": "x", "answer_contains": 5}]', "question 1: answer_contains"),
    # null was looked for as the text "None"
    ('[{"question": "x", "answer_contains": ["a", null]}]', "question 1: answer_contains"),
    ('[{"question": "x", "turn_seq": "abc"}]', "question 1: turn_seq"),
    ('[{"answer_contains": ["x"]}]', "question 1: question"),
])
def test_demo_reports_a_bad_questions_file(
    sample: tuple[Path, Path], tmp_path: Path, content: str | None, message: str
) -> None:
    conv, _ = sample
    questions = tmp_path / "questions.json"
    if content is not None:
        questions.write_text(content)
    assert message in _json_error(["demo", "--transcript", str(conv), "--codec", "none",
                                   "--questions", str(questions)])


def test_inspect_does_not_create_a_missing_sqlite_store(tmp_path: Path) -> None:
    db = tmp_path / "typo.db"
    assert "no SQLite store" in _json_error(["inspect", "team", "--store", f"sqlite:///{db}"])
    assert not db.exists()
    assert "unknown cost model" in _json_error(["inspect", "team", "--store", "memory://",
                                                "--cost-model", "nope"], code=2)
    # an id no session can have is named as such, not reported as "has no turns"
    assert "control character" in _json_error(["inspect", "a\nb", "--store", "memory://"],
                                               code=2)


@pytest.mark.parametrize(("session", "message"), [
    ("", "session id is empty"),
    ("a\nb", "control character U+000A"),
    ("x" * 257, "the limit is 256"),
])
def test_inspect_an_id_no_session_can_have_is_a_usage_error(
    tmp_path: Path, session: str, message: str
) -> None:
    """``opticmem inspect ""`` exited 1, as a failure of the store would, where a bad
    argument value is a usage error (exit 2) naming the argument; it is found before the
    store is looked at (this one does not exist)."""
    db = tmp_path / "typo.db"
    args = ["inspect", session, "--store", f"sqlite:///{db}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    shown = " ".join(result.output.split()).replace("│ ", "").replace(" │", "")
    assert "Invalid value for 'session'" in shown and message in shown
    assert "no SQLite store" not in shown
    error = _json_error(args, code=2)
    assert error.startswith("Invalid value for 'session': ") and message in error
    assert not db.exists()



@pytest.mark.parametrize(("session", "message"), [
    ("", "session id is empty"),
    ("te\tam", "control character U+0009"),
])
def test_demo_session_no_session_can_have_is_a_usage_error(
    sample: tuple[Path, Path], session: str, message: str
) -> None:
    """``demo --session ""`` was taken for no --session at all: it replayed and showed the
    largest session of the transcript, exit 0, as if that were the one asked for."""
    conv, _ = sample
    args = ["demo", "--transcript", str(conv), "--codec", "none", "--recalls", "0",
            "--session", session]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    shown = " ".join(result.output.split()).replace("│ ", "").replace(" │", "")
    assert "Invalid value for '--session'" in shown and message in shown
    error = _json_error(args, code=2)
    assert error.startswith("Invalid value for '--session': ") and message in error


@pytest.mark.parametrize("args", [
    ["demo", "--codec", "none", "--cost-model", "bogus"],
    ["inspect", "team", "--store", "memory://", "--cost-model", "bogus"],
])
def test_an_unknown_cost_model_is_a_usage_error(args: list[str]) -> None:
    """It was a failure (exit 1) where an unknown --codec or --tiers is a usage error (2)."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "unknown cost model 'bogus'" in result.output
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"].startswith("--cost-model: unknown cost model")


@pytest.mark.parametrize(("args", "message"), [
    (["eval", "--tiers", "huge"], "unknown tier 'huge'"),
    (["eval", "--tiers", ","], "no tiers"),
    (["eval", "--codec", "/nonexistent/ckpt"], "codec file missing"),
    # a negative seed drew pages as any other: no seed of the published table is negative
    (["eval", "--seed", "-1"], "should be greater than or equal to 0"),
    (["train", "--preset", "foo"], "unknown preset 'foo'"),
    (["train", "--init-from", "/nonexistent/ckpt"], "not a checkpoint directory"),
    # numpy's generators take no negative seed: a ValueError traceback from the data
    # loader, after the run directory and the model were made
    (["train", "--seed", "-1"], "--seed: must be a whole number in 0 … 2**64 - 1"),
    (["train", "--minutes", "inf"], "--minutes: must be a finite number"),  # for ever
    (["train", "--total-minutes", "inf"], "--total-minutes: must be a finite number"),
    (["train", "--seed", str(2**64)], "--seed: must be a whole number in 0 … 2**64 - 1"),
])
def test_codec_commands_reject_bad_options_before_any_work(
    args: list[str], message: str, tmp_path: Path
) -> None:
    """Each used to raise a traceback (train: after making its run directory)."""
    out = tmp_path / "run"
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()).replace("│ ", "").replace(" │", "")
    assert not out.exists()
    # with --json the error is the one JSON object on stdout (it used to print none)
    result = runner.invoke(app, [*args, "--out", str(out), "--json"])
    assert result.exit_code == 2, result.output
    assert message in json.loads(result.stdout)["error"]


@pytest.mark.parametrize("device", ["meta", "mps", "xpu"])
def test_a_device_torch_cannot_run_a_codec_on_is_a_usage_error(
    device: str, tmp_path: Path
) -> None:
    """Only CUDA devices were checked: these ended eval (and worker) in a traceback from
    deep in torch (NotImplementedError, AssertionError) after the pages were drawn."""
    result = runner.invoke(app, ["eval", "--pages", "1", "--hangul", "0", "--tiers", "tiny",
                                 "--device", device, "--out", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["error"].startswith(f"--device {device}: ")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("name", "content", "message"), [
    ("mine.txt", b"\xff\xfe not text", "not valid UTF-8"),
    ("mine.jsonl", b'{"text": "fine"}\n[1, 2]\n', ":2: expected a JSON object"),
    ("mine.txt", b"  \n\n", "has no visible text"),  # was one page reading "User:"
])
def test_eval_text_file_problems_are_usage_errors(
    name: str, content: bytes, message: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = runner.invoke(app, ["eval", "--text-file", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()).replace("│ ", "").replace(" │", "")


@pytest.mark.parametrize(("name", "content"), [
    ("mine.txt", "\u200b\u200b\n"),
    ("mine.txt", " \u200b\ufeff\u2060 \n\t\n"),
    ("chat.txt", "User: \u200b\nAssistant: \u200b\u200b\n"),
    ("chat.jsonl", '{"role": "user", "text": "\\u200b"}\n{"text": " \\u200b "}\n'),
    ("mine.txt", "   \n\n"),
])
def test_eval_refuses_a_text_file_with_no_visible_text(
    name: str, content: str, tmp_path: Path
) -> None:
    """A file of only zero-width spaces (U+200B) passed the strip() check, and eval scored
    one page that reads just "User:"; it is a usage error, as under --json, naming the file."""
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    args = ["eval", "--text-file", str(path), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "has no visible text" in " ".join(result.output.split()).replace("│ ", "").replace(
        " │", "")
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout) == {"error": (
        f"--text-file: {path} has no visible text (it is empty, or only whitespace or "
        "invisible characters such as U+200B)")}
    assert not (tmp_path / "o").exists()


def test_a_file_that_cannot_be_read_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file without read permission (or on a failing disk) passed is_file() and then
    ended ingest, demo, render and eval in a PermissionError/OSError traceback."""
    for name in ("chat.jsonl", "note.txt"):
        (tmp_path / name).write_text('{"role": "user", "text": "hi"}\n')

    def denied(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    monkeypatch.setattr(Path, "read_text", denied)
    chat, note = str(tmp_path / "chat.jsonl"), str(tmp_path / "note.txt")
    for args in (["ingest", chat, "--store", "memory://"],
                 ["demo", "--transcript", chat, "--codec", "none", "--recalls", "0"],
                 ["render", chat, "--out", str(tmp_path / "p")],
                 ["render", note, "--out", str(tmp_path / "p")]):
        assert "Permission denied" in _json_error(args), args
    result = runner.invoke(app, ["eval", "--text-file", note, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "Permission denied" in result.output, result.output



@pytest.mark.parametrize("session", ["", "a\rb"])
def test_ingest_default_session_no_session_can_have_is_a_usage_error(
    tmp_path: Path, session: str
) -> None:
    """A bad --default-session was found only line by line: every line without a session
    was a "bad line" of the file (exit 1), and with --skip-invalid each was skipped and
    the rest stored, exit 0 — the turns the option was given for were left out."""
    src = tmp_path / "chat.jsonl"
    src.write_text('{"session": "a", "role": "user", "text": "kept"}\n'
                   '{"role": "user", "text": "no session: the default one"}\n')
    db = tmp_path / "m.db"
    for extra in ([], ["--skip-invalid"]):
        args = ["ingest", str(src), "--store", f"sqlite:///{db}", "--default-session",
                session, *extra]
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--default-session'" in " ".join(result.output.split())
        assert _json_error(args, code=2).startswith("Invalid value for '--default-session': ")
        assert not db.exists()


def test_ingest_reports_a_line_nested_too_deeply(tmp_path: Path) -> None:
    """json.loads raises RecursionError on deep nesting; it used to escape as a traceback."""
    src = tmp_path / "deep.jsonl"
    src.write_text('{"session": "a", "role": "user", "text": "fine"}\n'
                   '{"role": "user", "text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    message = _json_error(["ingest", str(src), "--store", f"sqlite:///{tmp_path}/m.db"])
    assert "line 2: JSON nested too deeply" in message and "nothing stored" in message


def test_ingest_reports_a_timestamp_too_large_for_a_float(tmp_path: Path) -> None:
    """JSON integers have no size limit; float() of one past ~1e308 raised OverflowError,
    which escaped the per-line errors as a traceback."""
    src = tmp_path / "huge_ts.jsonl"
    src.write_text('{"session": "a", "role": "user", "text": "fine"}\n'
                   '{"session": "a", "role": "user", "text": "late", "ts": 1' + "0" * 400 + "}\n")
    db = tmp_path / "m.db"
    message = _json_error(["ingest", str(src), "--store", f"sqlite:///{db}"])
    assert "line 2: timestamp is out of range" in message and "nothing stored" in message
    assert not db.exists() or SQLiteStore(db).turn_count("a") == 0


@pytest.mark.parametrize(("name", "message"), [("missing/dir/sheet.png", "no directory"),
                                               ("sheet.foo", "unknown image extension")])
def test_sheet_paths_that_cannot_be_written_fail_before_any_work(
    sample: tuple[Path, Path], tmp_path: Path, name: str, message: str
) -> None:
    """Both used to end in a traceback from PIL — for demo, after all its work."""
    conv, _ = sample
    sheet = str(tmp_path / name)
    assert message in _json_error(["demo", "--transcript", str(conv), "--codec", "none",
                                   "--recalls", "0", "--sheet", sheet])
    assert message in _json_error(["inspect", "team", "--store", "memory://",
                                   "--sheet", sheet])


@pytest.mark.parametrize(("name", "message"), [
    ("s.xbm", "Pillow cannot write a greyscale image as XBM (cannot write mode L as XBM)"),
    ("s.h5", "Pillow cannot write a greyscale image as HDF5"),
    ("s.psd", "Pillow reads PSD images but cannot write them"),
    ("s.ico", "Pillow writes ICO at other sizes than the image's"),
    ("s.pbm", "Pillow writes a contact sheet as a greyscale PGM, not as .pbm"),
])
def test_sheet_formats_pillow_cannot_write_fail_before_any_work(
    sample: tuple[Path, Path], tmp_path: Path, name: str, message: str
) -> None:
    """Extensions Pillow knows but cannot write a greyscale sheet in (or writes as an
    icon of 256 pixels, or as another format) passed the early check: demo replayed the
    conversation, then failed to save ("cannot write the contact sheet") or wrote a
    thumbnail. Both commands that take --sheet refuse them first."""
    conv, _ = sample
    sheet = tmp_path / name
    for args in (["demo", "--transcript", str(conv), "--codec", "none", "--recalls", "0"],
                 ["inspect", "team", "--store", "memory://"]):
        error = _json_error([*args, "--sheet", str(sheet)])
        assert error.startswith(f"--sheet {sheet}: {message}"), error
        assert error.endswith(" (use .png)"), error
    assert not sheet.exists()
    for fine in ("s.jpg", "s.TIF", "s.pdf"):  # written in the sheet's mode, or not read back
        assert "has no turns" in _json_error(["inspect", "team", "--store", "memory://",
                                              "--sheet", str(tmp_path / fine)])


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_sheet_in_a_directory_that_takes_no_files_fails_before_any_work(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """A --sheet whose directory takes no files (no permission, a read-only mount; /proc
    even for root) or that names a directory passed the early check: demo replayed the
    conversation and read every page back before failing to save it."""
    conv, _ = sample
    (tmp_path / "d.png").mkdir()
    for sheet, message in (("/proc/sheet.png", "--sheet /proc/sheet.png: cannot write in "
                                               "/proc: "),
                           (str(tmp_path / "d.png"), "a directory, not a file")):
        for args in (["demo", "--transcript", str(conv), "--codec", "none"],
                     ["inspect", "team", "--store", "memory://"]):
            error = _json_error([*args, "--sheet", sheet])
            assert message in error and "contact sheet" not in error, error


def test_an_out_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """render used to end in FileExistsError; eval found it only after reading every page."""
    note, taken = tmp_path / "note.txt", tmp_path / "taken"
    note.write_text("hello")
    taken.write_text("a file")
    assert "cannot use --out" in _json_error(["render", str(note), "--out", str(taken)])
    for command in (["eval", "--text-file", str(note)], ["train"]):
        result = runner.invoke(app, [*command, "--out", str(taken)])
        assert result.exit_code == 2 and "not a directory" in result.output, result.output


@pytest.mark.parametrize(("env", "terminal", "shown"), [
    (None, True, True), (None, False, False),
    ("0", True, False), ("off", True, False),  # used to be drawn on a terminal regardless
    ("1", False, True),
])
def test_progress_bars_follow_opticmem_progress(
    monkeypatch: pytest.MonkeyPatch, env: str | None, terminal: bool, shown: bool,
) -> None:
    """OPTICMEM_PROGRESS=0 turns the bars off even on a terminal, =1 turns them on off
    one; unset, a terminal decides. --json never draws one."""
    from rich.console import Console

    from opticmem import cli

    if env is None:
        monkeypatch.delenv("OPTICMEM_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("OPTICMEM_PROGRESS", env)
    monkeypatch.setattr(cli, "err", Console(stderr=True, force_terminal=terminal))
    assert cli._progress(as_json=False).disable is not shown
    assert cli._progress(as_json=True).disable


def test_opticmem_progress_1_draws_the_bars_off_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rich draws nothing live on a console that is not a terminal, and a transient bar
    not even at its end: OPTICMEM_PROGRESS=1 with stderr captured drew no bar at all."""
    monkeypatch.setenv("OPTICMEM_PROGRESS", "1")
    note = tmp_path / "note.txt"
    note.write_text("hello " * 400)
    result = runner.invoke(app, ["render", str(note), "--out", str(tmp_path / "pages")])
    assert result.exit_code == 0, result.output
    assert "rendering" in result.stderr
    monkeypatch.setenv("OPTICMEM_PROGRESS", "0")
    result = runner.invoke(app, ["render", str(note), "--out", str(tmp_path / "pages")])
    assert result.exit_code == 0 and "rendering" not in result.stderr


def test_eval_json_names_its_command_as_every_other_command_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``eval --json`` printed ``{"meta", "summary"}`` without the ``"command"`` key that
    demo, ingest, render, inspect, worker and queue all print first."""
    from types import SimpleNamespace

    note = tmp_path / "note.txt"
    note.write_text("User: Titan ships on 2026-03-04.\n", encoding="utf-8")
    codec = SimpleNamespace(name="fake", device="cpu", batch_size=1)
    monkeypatch.setattr("opticmem.encoder.bundled.load_bundled_codec",
                        lambda *args, **kwargs: codec)
    monkeypatch.setattr("opticmem.evaluation.evaluate", lambda *args, **kwargs: [])
    d = run_json("eval", "--text-file", str(note), "--tiers", "tiny", "--device", "cpu",
                 "--out", str(tmp_path / "o"))
    assert list(d)[:1] == ["command"] and d["command"] == "eval"
    assert {"meta", "summary"} <= set(d)


def test_train_json_names_its_command_as_every_other_command_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train --json`` printed ``{"step", "pages", …}`` without the ``"command"`` key."""
    progress = {"step": 3, "pages": 96, "minutes": 0.5, "runs": 1, "log": []}
    monkeypatch.setattr("opticmem.encoder.train.train", lambda cfg: progress)
    d = run_json("train", "--preset", "test", "--out", str(tmp_path / "run"))
    assert list(d)[:1] == ["command"] and d["command"] == "train"
    assert d["step"] == 3 and d["pages"] == 96 and d["last"] is None



def test_train_refuses_an_infinite_learning_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--peak-lr inf passed typer's min=0 and train() ran with it: AdamW turned every
    weight to NaN, and the run saved them as its state (over the trained one, when
    resumed). It is a usage error, before the run directory is made."""
    def never(cfg: object) -> None:
        raise AssertionError("train() ran with --peak-lr inf")

    monkeypatch.setattr("opticmem.encoder.train.train", never)
    out = tmp_path / "run"
    args = ["train", "--preset", "test", "--out", str(out), "--peak-lr", "inf"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "must be a finite number" in result.output
    assert _json_error(args, code=2) == "--peak-lr: must be a finite number, got inf"
    assert not out.exists()


def test_train_refuses_the_official_preset_its_help_does_not_offer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train --preset official`` was accepted although the help says "bundled or test":
    it went on to build the 3.3B model in float32 with AdamW (some 40 GB) on this trainer."""
    def never(cfg: object) -> None:
        raise AssertionError("train() ran with --preset official")

    monkeypatch.setattr("opticmem.encoder.train.train", never)
    args = ["train", "--preset", "official", "--out", str(tmp_path / "run")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "train takes preset bundled or test, not 'official'" in " ".join(
        result.output.split()).replace("│ ", "").replace(" │", "")
    assert _json_error(args, code=2).startswith("--preset: train takes preset bundled or test")
    assert not (tmp_path / "run").exists()
    help_text = " ".join(runner.invoke(app, ["train", "--help"]).output.split())
    assert "Model preset: bundled or test." in help_text.replace("│ ", "").replace(" │", "")


@pytest.mark.parametrize(("export", "init_from", "option", "message"), [
    ("run/state/model", None, "--export", "inside the run's saved state"),
    ("run/state", None, "--export", "inside the run's saved state"),
    ("run/state.tmp/x", None, "--export", "inside the run's saved state"),
    ("run", None, "--export", "is the run directory"),
    ("run/../run/", None, "--export", "is the run directory"),
    ("link/model", None, "--export", "inside the run's saved state"),  # link → run/state
    ("w", "w", "--export", "overwrite the weights the run starts from"),
    ("w/.", "w", "--export", "overwrite the weights the run starts from"),
    (None, "link/model", "--init-from", "inside the run's saved state"),
])
def test_train_refuses_overlapping_out_export_and_init_from(
    export: str | None, init_from: str | None, option: str, message: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--export run/state/model`` (or ``--out``, or ``--init-from``'s folder) was
    accepted: after training, the bf16 export overwrote the run's float32 weights (or the
    weights it started from). Paths are compared resolved (``..``, symlinks), before any
    work."""
    def never(cfg: object) -> None:
        raise AssertionError("train() ran with overlapping paths")

    monkeypatch.setattr("opticmem.encoder.train.train", never)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run" / "state").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "run" / "state")
    args = ["train", "--preset", "test", "--out", "run"]
    args += ["--export", export] if export is not None else []
    args += ["--init-from", init_from] if init_from is not None else []
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()).replace("│ ", "").replace(" │", "")
    assert _json_error(args, code=2).startswith(f"{option}: ")
    assert list((tmp_path / "run" / "state").iterdir()) == []


def test_train_accepts_an_export_beside_the_run_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export folder inside --out but outside its state folders is fine (nothing there
    is written or deleted by the run's saves)."""
    exported: list[Path] = []
    progress = {"step": 1, "pages": 2, "minutes": 0.1, "runs": 1, "log": []}
    monkeypatch.setattr("opticmem.encoder.train.train", lambda cfg: progress)
    monkeypatch.setattr("opticmem.encoder.bundled.export_bundled",
                        lambda src, dst: exported.append(dst))
    d = run_json("train", "--preset", "test", "--out", str(tmp_path / "run"),
                 "--export", str(tmp_path / "run" / "export"))
    assert d["exported"] == str(tmp_path / "run" / "export")
    assert exported == [tmp_path / "run" / "export"]


def test_ingest_append_reports_the_pages_this_run_sealed(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """After ``ingest --append`` "pages sealed" (and ``"pages"``) was the session's total
    page count: the second run of a transcript reported 91 pages where it sealed 46."""
    conv, _ = sample
    url = f"sqlite:///{tmp_path}/m.db"
    first = run_json("ingest", str(conv), "--store", url)
    assert first["session_totals"] == {"team": {"turn_count": 260,
                                                "page_count": first["pages"]["team"]}}
    second = run_json("ingest", str(conv), "--store", url, "--append")
    with SQLiteStore(tmp_path / "m.db") as s:
        held = s.page_count("team")
    assert second["pages"]["team"] == held - first["pages"]["team"] < held
    assert second["turns"] == 260 and second["sessions"] == {"team": 260}
    assert second["session_totals"] == {"team": {"turn_count": 520, "page_count": held}}
    result = runner.invoke(app, ["ingest", str(conv), "--store", url, "--append"])
    assert result.exit_code == 0, result.output
    with SQLiteStore(tmp_path / "m.db") as s:
        now = s.page_count("team")
    assert (f"pages sealed: {now - held} (the session(s) now hold {now} pages, 780 turns)"
            in " ".join(result.stdout.split()))


@pytest.mark.parametrize("args", [
    ["inspect", "team", "--budget", "0"],  # an option value typer itself refuses
    ["inspect"],  # a missing argument
    ["render", "notes.txt", "--no-such-option"],
    ["queue", "redis://localhost:1/0", "--dead", "-1"],
])
def test_usage_errors_with_json_are_one_json_object(args: list[str]) -> None:
    """Typer reports the usage errors it finds itself on stderr: with --json a script
    reading stdout got nothing, where every other failure gives one {"error": …}."""
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stdout
    assert json.loads(lines[0])["error"]



@pytest.mark.parametrize("idle", ["inf", "1e20"])
def test_worker_claim_idle_redis_cannot_take_is_a_usage_error(idle: str) -> None:
    """--claim-idle inf ended the worker in an OverflowError traceback once the codec was
    loaded; 1e20 s, as milliseconds past what Redis's XAUTOCLAIM takes, failed every step
    and the worker retried for ever, reading nothing. Both are refused first (this Redis
    is not even reachable)."""
    args = ["worker", "redis://localhost:1/0", "--codec", "random", "--claim-idle", idle]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--claim-idle" in result.output
    assert _json_error(args, code=2).startswith("Invalid value for '--claim-idle': ")


@pytest.mark.parametrize("idle", ["inf", "2e9"])
def test_worker_forget_idle_past_the_workers_limit_is_a_usage_error(idle: str) -> None:
    """--forget-idle had only a lower bound while the worker refuses more than
    ``MAX_CLAIM_IDLE`` seconds: 2e9 was taken, the codec loaded, and only then the run
    failed (exit 1) naming ``forget_idle``, an argument the user never typed. It is
    refused first, as --claim-idle is (this Redis is not even reachable)."""
    args = ["worker", "redis://localhost:1/0", "--codec", "random", "--forget-idle", idle]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--forget-idle" in result.output
    assert _json_error(args, code=2).startswith("Invalid value for '--forget-idle': ")



def test_worker_batch_size_redis_cannot_take_is_a_usage_error() -> None:
    """--batch-size 1e20 was taken: Redis refused the XAUTOCLAIM count ("COUNT must be
    > 0"), every step failed and a worker retried for ever, reading nothing (with --once
    it gave up after a minute and exited 0)."""
    args = ["worker", "redis://localhost:1/0", "--codec", "random", "--batch-size", str(10**20)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--batch-size" in result.output
    assert _json_error(args, code=2).startswith("Invalid value for '--batch-size': ")


@pytest.mark.parametrize(("consumer", "why"), [
    ("gpu-1\nERROR forged log line", "control character U+000A at index 5"),
    ("gpu\x1b[31m", "control character U+001B at index 3"),
    ("gpu\u2028", "control character U+2028 at index 3"),
    ("gpu\udcff", "a lone surrogate U+DCFF at index 3"),  # bytes not UTF-8 on the line
])
def test_worker_consumer_with_a_control_character_is_a_usage_error(
    consumer: str, why: str
) -> None:
    """The consumer name goes to Redis (XINFO CONSUMERS) and into the worker's log lines:
    a newline in it forged a log line of its own, and a lone surrogate failed only at
    Redis. Refused first, as an empty name is (this Redis is not even reachable)."""
    args = ["worker", "redis://localhost:1/0", "--codec", "random", "--consumer", consumer]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--consumer" in result.output, result.output
    assert _json_error(args, code=2) == f"--consumer: the consumer name has {why}"


@pytest.mark.parametrize(("url", "message"), [
    ("", "not a store URL: ''"),
    ("bogus://x", "unknown store scheme 'bogus'"),
    ("sqlite://", "bad SQLite URL 'sqlite://'"),
    ("memory://?x=1", "bad memory URL"),
    ("redis://[::1", "malformed store URL"),
])
def test_a_malformed_store_url_is_a_usage_error(tmp_path: Path, url: str, message: str) -> None:
    """``--store ''`` or ``--store bogus://…`` exited 1, as a store that failed would,
    where a bad option value is a usage error (exit 2) naming the option, as ``worker
    sqlite:///…`` already was. A store that cannot be reached stays a failure (exit 1)."""
    src = tmp_path / "chat.jsonl"
    src.write_text('{"role": "user", "text": "hi"}\n')
    for args in (["ingest", str(src), "--store", url], ["inspect", "s", "--store", url]):
        assert _json_error(args, code=2).startswith(f"--store: {message}")
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Invalid value for --store" in result.output


@pytest.mark.parametrize(("url", "message"), [
    ("redis://[::1", "not a Redis URL"),
    ("redis://h:99999999/0", "Port out of range"),
    ("redis://h/0?ttl=zz", "bad ttl='zz'"),
])
def test_a_malformed_redis_url_of_worker_or_queue_is_a_usage_error(url: str, message: str) -> None:
    """As with any other scheme than Redis's (already exit 2), before Redis is reached."""
    for args in (["queue", url], ["worker", url, "--codec", "random"]):
        assert message in _json_error(args, code=2)
        assert runner.invoke(app, args).exit_code == 2


def test_a_store_scheme_whose_backend_is_not_installed_is_a_failure() -> None:
    """``redis://`` without the ``[redis]`` extra is a StoreURLError raised from the
    ImportError: the installation's failure (exit 1), not a usage error."""
    from opticmem.cli import bad_store_url
    from opticmem.errors import StoreURLError

    try:
        raise StoreURLError("the store backend is not available") from ImportError("redis")
    except StoreURLError as exc:
        assert not bad_store_url(exc)
    assert bad_store_url(StoreURLError("unknown store scheme"))


@pytest.mark.parametrize("args", [
    ["inspect", "s", "--store", "--json", "--budget", "0"],
    ["ingest", "--store", "--json"],  # the missing file
    ["worker", "--consumer", "--json"],
    ["demo", "--transcript", "--json", "--budget", "0", "--", "--json"],
])
def test_json_as_the_value_of_another_option_asks_for_no_json(args: list[str]) -> None:
    """``--store --json`` gives the store URL "--json": --json is not asked for, but the
    usage error (--budget 0, the URL itself, a missing argument) came out as a JSON
    object where typer's own message was due."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Usage: opticmem" in result.output and not result.stdout.lstrip().startswith("{")


def test_usage_errors_without_json_are_still_typers_own() -> None:
    result = runner.invoke(app, ["inspect", "team", "--budget", "0"])
    assert result.exit_code == 2 and "--budget" in result.output
    assert not result.output.lstrip().startswith("{")


@pytest.mark.parametrize("damage", ["under a file", "takes no files"])
def test_eval_refuses_an_out_it_cannot_write_before_loading_the_codec(
    damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    unwritable_target: Callable[[str, str], Path],
) -> None:
    """An --out under a file, or in a folder that takes no files (no permission, a
    read-only mount), was found only after the codec's weights were loaded (seconds; a
    3B-parameter checkpoint's minutes): a usage error, said before any work."""
    import opticmem.encoder.bundled as bundled

    def loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("the codec was loaded before --out was checked")

    monkeypatch.setattr(bundled, "load_bundled_codec", loaded)
    out = unwritable_target(damage, "eval")
    args = ["eval", "--pages", "1", "--hangul", "0", "--tiers", "tiny", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)["error"]
    assert error.startswith(f"--out: cannot use {out} as a directory: ")
    assert error.endswith("a-file is a file, not a directory" if damage == "under a file"
                          else "takes no files (Permission denied)")
    assert not out.exists()


def test_eval_codec_path_with_a_nul_character_is_a_usage_error(tmp_path: Path) -> None:
    """A --codec path holding a NUL character (a pasted or scripted value) ended in a
    ValueError traceback ("embedded null byte") from listing the folder for pickles."""
    args = ["eval", "--codec", "ckpt\x00dir", "--pages", "1", "--hangul", "0",
            "--out", str(tmp_path / "o"), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["error"].startswith("--codec: codec file missing")
    assert not (tmp_path / "o").exists()
