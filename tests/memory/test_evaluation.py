"""The decay-curve evaluation: held-out pages on any install, scores, tables and files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from opticmem.cli import app
from opticmem.encoder import synth
from opticmem.encoder.bundled import weights_dir
from opticmem.encoder.metrics import char_precision
from opticmem.encoder.ocr import OCRCodec
from opticmem.evaluation import (
    PageScore,
    evaluate,
    heldout_pages,
    is_hangul_page,
    markdown_table,
    misreads_report,
    summarise,
    write_results,
)
from opticmem.render import Tier


def test_heldout_pages_come_from_the_packaged_eval_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clean install has no data/synth export: the shipped eval sources must suffice.
    monkeypatch.setenv(synth.DATA_ENV, str(tmp_path / "nothing-here"))
    chat, korean = heldout_pages(3, seed=5, hangul=2)
    again, _ = heldout_pages(3, seed=5, hangul=0)
    assert [p.transcript for p in chat] == [p.transcript for p in again]
    assert len(chat) == 3 and all(len(p.transcript) > 200 for p in chat)
    assert len(korean) == 2 and all(is_hangul_page(p.transcript) for p in korean)
    assert synth.load_sources("eval", synth.EVAL_SOURCES_DIR).split == "eval"


def test_heldout_pages_reports_each_page_drawn() -> None:
    drawn: list[int] = []
    chat, korean = heldout_pages(3, seed=5, hangul=1, progress=drawn.append)
    assert drawn[:3] == [1, 1, 1] and sum(drawn) == len(chat) + len(korean) == 4


def test_eval_command_bounds_the_pages_it_draws_and_shows_it_drawing_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``eval --pages 10000000`` drew pages for more than a day with no sign of life before
    the codec loaded; --pages and --hangul are bounded now, and drawing has its own bar."""
    from types import SimpleNamespace

    out = str(tmp_path / "o")
    for option in ("--pages", "--hangul"):
        result = CliRunner().invoke(app, ["eval", option, "10000000", "--out", out])
        assert result.exit_code == 2 and option in result.output, result.output
    codec = SimpleNamespace(name="fake", device="cpu", batch_size=1)
    monkeypatch.setattr("opticmem.encoder.bundled.load_bundled_codec",
                        lambda *args, **kwargs: codec)
    monkeypatch.setattr("opticmem.evaluation.evaluate", lambda *args, **kwargs: [])
    monkeypatch.setenv("OPTICMEM_PROGRESS", "1")
    result = CliRunner().invoke(app, ["eval", "--pages", "2", "--hangul", "0", "--tiers",
                                      "tiny", "--device", "cpu", "--out", out])
    assert result.exit_code == 0, result.output
    assert "drawing pages" in result.stderr


def test_is_hangul_page() -> None:
    assert is_hangul_page("안녕하세요 오늘 회의는 세 시입니다")
    assert not is_hangul_page("Meeting at 3pm, 회의")
    assert not is_hangul_page("   ")


def test_scores_summary_and_files(tmp_path: Path) -> None:
    chat, korean = heldout_pages(2, seed=7, hangul=1)
    codec = OCRCodec.random("test", seed=0)
    scores = evaluate(codec, chat + korean, count_tokens=lambda s: len(s.split()),
                      tiers=[Tier.TINY, Tier.SMALL], batch_size=2, max_new_tokens=4)
    assert len(scores) == 3 * 2
    for s in scores:
        assert 0.0 <= s.char_precision <= 1.0 and 0.0 <= s.word_precision <= 1.0
        assert s.slots == Tier.parse(s.tier).slots
        assert s.compression == pytest.approx(s.text_tokens / s.slots)
        assert s.exact_found <= s.exact_total
    assert [s.hangul for s in scores if s.tier == "tiny"] == [False, False, True]
    rows = summarise(scores)
    groups = {(r.tier, r.group) for r in rows}
    assert {("tiny", "all"), ("tiny", "hangul"), ("small", "all"), ("small", "hangul")} <= groups
    assert all(r.pages >= 1 for r in rows)
    table = markdown_table(rows)
    assert table.count("\n") == len(rows) + 1
    write_results(scores, tmp_path, {"codec": codec.name})
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["meta"]["codec"] == codec.name and len(data["pages"]) == len(scores)
    assert "reference" not in data["pages"][0]  # the texts go to readback.jsonl
    assert (tmp_path / "eval.md").read_text().startswith("| tier |")
    lines = (tmp_path / "readback.jsonl").read_text(encoding="utf-8").splitlines()
    back = [json.loads(line) for line in lines]
    assert [(b["page"], b["tier"]) for b in back] == [(s.page, s.tier) for s in scores]
    assert [b["reference"] for b in back[:3]] == [p.transcript for p in chat + korean]
    assert [b["recollected"] for b in back] == [s.recollected for s in scores]
    report = (tmp_path / "misreads.md").read_text(encoding="utf-8")
    assert report.startswith("# Misreads") and "## tiny" in report
    with Image.open(tmp_path / "precision_vs_compression.png") as img:
        assert img.size == (900, 560)


def test_results_are_utf8_whatever_the_locale(tmp_path: Path) -> None:
    # eval.md always holds "×", and eval.json a Hangul file name as written: under an
    # ASCII locale (LC_ALL=C without UTF-8 mode) writing them in the locale's encoding
    # failed after every page had been read.
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from opticmem.evaluation import PageScore, write_results\n"
        "s = PageScore(page=0, tier='tiny', text_tokens=10, slots=73, compression=0.14, "
        "char_precision=0.5, word_precision=0.5, exact_found=0, exact_total=0, "
        "seconds=0.1, hangul=True, confidence=0.9, reference='\\uc548', recollected='')\n"
        "write_results([s], Path(sys.argv[1]), {'source': '\\ub178\\ud2b8.txt'})\n"
    )  # escaped: an ASCII locale cannot pass Hangul on the command line
    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    meta = json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))["meta"]
    assert meta["source"] == "노트.txt"
    assert "73 / 0.1×" in (tmp_path / "eval.md").read_text(encoding="utf-8")


def eval_report(text: Path, out: Path, *, tiers: str, max_new_tokens: int) -> dict[str, Any]:
    """What ``opticmem eval --json`` prints for ``text`` read on CPU into ``out``; exit 0."""
    result = CliRunner().invoke(app, [
        "eval", "--text-file", str(text), "--tiers", tiers,
        "--max-new-tokens", str(max_new_tokens), "--device", "cpu", "--out", str(out), "--json",
    ])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.output)
    return report


@pytest.mark.skipif(not (weights_dir() / "model.safetensors.index.json").is_file(),
                    reason="no bundled weights in this checkout")
def test_eval_command_on_a_users_text_file(tmp_path: Path) -> None:
    text = tmp_path / "mine.txt"
    text.write_text("User: Project Titan ships on 2026-03-04, budget $12,400.\n"
                    "Assistant: Noted: Titan, 2026-03-04, $12,400.\n", encoding="utf-8")
    out = tmp_path / "eval"
    report = eval_report(text, out, tiers="large", max_new_tokens=48)
    assert report["meta"]["source"] == str(text) and report["meta"]["tiers"] == ["large"]
    [row] = [r for r in report["summary"] if r["group"] == "all"]
    assert row["pages"] == 1 and 0.0 <= row["char_precision"] <= 1.0
    assert (out / "eval.json").is_file() and (out / "precision_vs_compression.png").is_file()


@pytest.mark.skipif(not (weights_dir() / "model.safetensors.index.json").is_file(),
                    reason="no bundled weights in this checkout")
def test_eval_command_reads_a_tier_named_twice_once(tmp_path: Path) -> None:
    """--tiers tiny,TINY read every page twice and reported twice the pages it had."""
    text = tmp_path / "mine.txt"
    text.write_text("User: Titan ships on 2026-03-04.\n", encoding="utf-8")
    out = tmp_path / "eval"
    report = eval_report(text, out, tiers="tiny,TINY", max_new_tokens=4)
    assert report["meta"]["tiers"] == ["tiny"] and report["meta"]["pages"] == 1
    [row] = [r for r in report["summary"] if r["group"] == "all"]
    assert row["pages"] == 1
    assert len((out / "readback.jsonl").read_text(encoding="utf-8").splitlines()) == 1


@pytest.mark.skipif(not (weights_dir() / "model.safetensors.index.json").is_file(),
                    reason="no bundled weights in this checkout")
def test_ctrl_c_during_eval_exits_130_with_one_json_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Typer turned Ctrl-C into a silent exit 130: with --json, stdout held nothing."""
    text = tmp_path / "mine.txt"
    text.write_text("User: Titan ships on 2026-03-04.\n", encoding="utf-8")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("opticmem.evaluation.evaluate", interrupted)
    result = CliRunner().invoke(app, ["eval", "--text-file", str(text), "--tiers", "tiny",
                                      "--device", "cpu", "--out", str(tmp_path / "o"),
                                      "--json"])
    assert result.exit_code == 130, result.output
    assert "interrupted" in json.loads(result.stdout)["error"]


def test_misreads_report_shows_where_the_worst_pages_went_wrong() -> None:
    def score(page: int, tier: str, reference: str, recollected: str) -> PageScore:
        return PageScore(page=page, tier=tier, text_tokens=10, slots=73, compression=0.1,
                         char_precision=char_precision(reference, recollected),
                         word_precision=1.0, exact_found=0, exact_total=0, seconds=0.1,
                         hangul=False, confidence=0.0, reference=reference,
                         recollected=recollected)

    scores = [
        score(0, "tiny", "Invoice INV-2291 due 2026-03-04.\nThanks", "Invoice INV-2281 due"),
        score(1, "tiny", "all read back right", "all read back right"),
        score(2, "small", "배송이 아직", "배워이 아직"),
    ]
    report = misreads_report(scores, worst=3)
    tiny = report[report.index("## tiny"):]
    assert "page 0:" in tiny and "page 1:" not in report  # perfect pages are not listed
    assert "'9' → '8'" in tiny  # a substitution
    assert "' 2026-03-04.\\nThanks' → ''" in tiny  # the lost tail
    assert "'송' → '워'" in report[report.index("## small"):report.index("## tiny")]
    assert "## base" not in report
    assert "##" not in misreads_report(scores[1:2])  # nothing misread, no sections
    # The summary by kind: tiny lost 9 of 12 digits (one misread, the tail dropped) over
    # both its pages; small one of 5 Hangul syllables.
    assert "| tiny | 82.9% of 35 | 25.0% of 12 | — | 25.0% of 4 | 71.4% of 7 |" in report
    assert "| small | — | — | 80.0% of 5 | — | 100.0% of 1 |" in report


def test_eval_command_rejects_a_missing_text_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "--text-file", str(tmp_path / "no.txt")],
                                env={"COLUMNS": "400"})
    assert result.exit_code != 0
    assert "is not a file" in result.output


@pytest.mark.parametrize(("device", "why"), [("bogus", "not a device torch knows"),
                                           ("cuda:7", "CUDA device(s)")])
def test_eval_command_refuses_a_device_before_reading_any_page(
    tmp_path: Path, device: str, why: str,
) -> None:
    """A misspelt --device, or a GPU this machine lacks, ended in a torch traceback after
    the held-out pages were drawn; it is a usage error now, and nothing is written."""
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "--device", device, "--pages", "1", "--json",
                                      "--out", str(out)])
    assert result.exit_code == 2
    assert why in json.loads(result.stdout)["error"]
    assert not out.exists()


@pytest.mark.skipif(not (weights_dir() / "model.safetensors.index.json").is_file(),
                    reason="no bundled weights in this checkout")
def test_eval_command_refuses_an_out_it_cannot_make_before_reading_any_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--out under a file passed the early check (it does not exist) and ended in a
    NotADirectoryError traceback after every page had been read; it is a usage error
    now, found before the codec reads anything."""
    text = tmp_path / "mine.txt"
    text.write_text("Titan ships on 2026-03-04.\n", encoding="utf-8")

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("pages were read before --out was checked")

    monkeypatch.setattr("opticmem.evaluation.evaluate", no_reading)
    result = CliRunner().invoke(app, ["eval", "--text-file", str(text), "--device", "cpu",
                                      "--out", str(text / "eval"), "--json"])
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)["error"]
    assert error.startswith("--out: cannot use") and str(text / "eval") in error


@pytest.mark.skipif(not (weights_dir() / "model.safetensors.index.json").is_file(),
                    reason="no bundled weights in this checkout")
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_eval_command_refuses_an_out_that_takes_no_files_and_reports_a_failed_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An --out that exists but takes no files (no permission, a read-only mount; /proc
    even for root) passed the checks, and the results' write ended in a traceback after
    every page had been read; a write that fails then (a full disk) is a one-line error."""
    text = tmp_path / "mine.txt"
    text.write_text("Titan ships on 2026-03-04.\n", encoding="utf-8")

    def no_reading(*args: object, **kwargs: object) -> list[PageScore]:
        return []

    monkeypatch.setattr("opticmem.evaluation.evaluate", no_reading)
    args = ["eval", "--text-file", str(text), "--device", "cpu", "--tiers", "tiny", "--json"]
    result = CliRunner().invoke(app, [*args, "--out", "/proc"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["error"].startswith("--out: cannot use /proc as a dir")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("opticmem.evaluation.write_results", disk_full)
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout) == {
        "error": f"cannot write the results to {tmp_path / 'o'}: No space left on device"}


def test_summary_rows_mean_over_pages_pool_ids_and_bucket_half_open() -> None:
    def score(page: int, tokens: int, precision: float, found: int, total: int,
              hangul: bool = False) -> PageScore:
        return PageScore(page=page, tier="tiny", text_tokens=tokens, slots=73,
                         compression=tokens / 73, char_precision=precision,
                         word_precision=precision, exact_found=found, exact_total=total,
                         seconds=1.0, hangul=hangul, confidence=0.0, reference="",
                         recollected="")

    scores = [score(0, 199, 1.0, 1, 1), score(1, 200, 0.5, 0, 3), score(2, 299, 0.0, 0, 0),
              score(3, 900, 0.2, 5, 5, hangul=True)]
    rows = {r.group: r for r in summarise(scores)}
    assert list(rows) == ["all", "100-200", "200-300", "hangul"]
    everything = rows["all"]  # every page that is not Hangul
    assert everything.pages == 3
    assert everything.char_precision == pytest.approx(0.5)  # the mean of the pages'
    assert everything.exact_rate == pytest.approx(1 / 4)  # pooled: 1 of the 4 ids found
    assert everything.compression == pytest.approx((199 + 200 + 299) / 3 / 73)
    # Buckets are [lo, lo + 100): 199 in 100-200, 200 and 299 in 200-300.
    assert (rows["100-200"].pages, rows["200-300"].pages) == (1, 2)
    assert rows["hangul"].pages == 1 and rows["hangul"].char_precision == pytest.approx(0.2)
    no_ids = summarise([score(0, 10, 1.0, 0, 0)])[0]
    assert no_ids.exact_rate is None and "| – |" in markdown_table([no_ids])


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_evaluate_refuses_a_batch_size_that_is_no_whole_number_above_zero(
    batch_size: Any,
) -> None:
    """A negative ``batch_size`` scored no page at all and returned ``[]`` (``range`` with a
    negative step is empty), as if there were nothing to evaluate; 0 and 2.5 raised a bare
    ``range`` error."""
    from opticmem.errors import ConfigurationError
    from opticmem.render import TurnText, layout_pages

    pages = layout_pages([TurnText("user", "Ship v1.2.3 on 2026-03-04.")])
    codec = OCRCodec.random("test", seed=0)
    with pytest.raises(ConfigurationError, match="batch_size"):
        evaluate(codec, pages, count_tokens=len, tiers=[Tier.TINY], batch_size=batch_size)


def test_evaluate_draws_pages_batch_by_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every page's Large master (1.6 MB each) was drawn before the first batch was read
    and held to the end: a long ``--text-file`` took gigabytes before any progress. Pages
    are now drawn for the batch that reads them, and score the same."""
    from opticmem import evaluation
    from opticmem.render import PageLayout, TurnText, layout_pages

    pages = layout_pages([TurnText("user", "Titan ships 2026-03-04, ok. " * 1000)])
    assert len(pages) >= 5
    codec = OCRCodec.random("test", seed=0)
    drawn: list[int] = []
    draws_at_progress: list[int] = []
    real = evaluation.draw_page

    def counted(page: PageLayout) -> np.ndarray:
        drawn.append(1)
        return real(page)

    monkeypatch.setattr(evaluation, "draw_page", counted)
    scores = evaluate(codec, pages[:5], count_tokens=len, tiers=[Tier.TINY], batch_size=2,
                      max_new_tokens=1, progress=lambda n: draws_at_progress.append(len(drawn)))
    assert draws_at_progress == [2, 4, 5]
    assert [s.reference for s in scores] == [p.transcript for p in pages[:5]]
