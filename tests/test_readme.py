"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples() -> None:
    assert BLOCKS, "the README lost its examples"


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    assert "Let's plan Project Titan" in capsys.readouterr().out


def test_readme_states_the_facts_cap_the_code_has() -> None:
    from opticmem.facts import MAX_FACTS

    text = " ".join(README.read_text().split())
    assert f"the first {MAX_FACTS} distinct facts of a page" in text


def _row_cells(table: str, *first: str) -> list[str]:
    """The cells of the row of a Markdown ``table`` whose leading cells are ``first``."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[: len(first)] == list(first):
            return cells
    raise AssertionError(f"no row {first} in the results")


def test_readme_quotes_the_memory_benchmark_as_it_stands() -> None:
    """The README's memory-core figures are the current ``memory_speed.md``'s: a rerun of
    the benchmark left the README quoting the run before it (another host's numbers)."""
    results = (README.parent / "benchmarks/results/memory_speed.md").read_text()
    text = " ".join(README.read_text().split())
    draw = _row_cells(results, "draw the Large master from its layout")[1]
    match = re.fullmatch(r"([\d.]+) ms \((\d+) pages/s\)", draw)
    assert match, draw
    ms, per_s = match.groups()
    assert f"| draw a Large page from its layout | {ms} ms ({per_s} pages/s/core)" in text
    for store, where in (("memory", "in-process"), ("sqlite", "SQLite")):
        row = _row_cells(results, store, "100,000")
        add_p50, add_p99 = row[3].split()[0], row[4].split()[0]
        ctx_p50, ctx_p99 = row[5].split()[0], row[6].split()[0]
        assert f"{add_p50} / {add_p99} ms {where}" in text
        assert f"{ctx_p50} / {ctx_p99} ms {where}" in text
    peaks = [_row_cells(results, store, "100,000", "42.8 MB")[5] for store in ("memory", "sqlite")]
    assert f"{peaks[0]} in-process, {peaks[1]} SQLite" in text


def test_readme_redis_from_url_calls_take_settings_as_keywords() -> None:
    """Each ``RedisStore.from_url(...)`` the README shows passes a URL that call accepts:
    it read ``from_url(url, cluster=True)`` right after a URL holding ``?cluster=1&tenant=``,
    and ``from_url`` refuses such a URL (its settings are keyword arguments)."""
    from urllib.parse import parse_qsl, urlsplit

    from opticmem.redis_store import _URL_SETTINGS

    calls = re.findall(r"RedisStore\.from_url\((.*?)\)`", " ".join(README.read_text().split()))
    assert calls, "the README no longer shows RedisStore.from_url"
    for args in calls:
        url = re.match(r'"([^"]+)"', args)
        assert url, f"RedisStore.from_url({args}) shows no URL"
        keys = {k for k, _ in parse_qsl(urlsplit(url.group(1)).query)}
        assert not keys & set(_URL_SETTINGS), f"from_url refuses {url.group(1)}"


def test_readme_says_how_a_fork_meets_sqlite_calls() -> None:
    """The README tells what a fork does to SQLite store calls in progress as the store
    does it: a fork waits for them (up to ``_ForkGate.WAIT_S``). It still told users not to
    fork while a thread was inside a store call, the child's writes waiting out the busy
    timeout, after the store came to wait for such calls itself."""
    from opticmem.sqlite_store import _ForkGate

    text = " ".join(README.read_text().split())
    assert "do not fork while another thread is inside a store call" not in text
    assert "a fork waits for the SQLite store calls in progress" in text
    minutes = f"{_ForkGate.WAIT_S / 60:g}"
    assert f"a call still running after {minutes} minutes lets the fork go on" in text


def test_readme_says_the_offline_agent_cannot_take_the_recall_tool() -> None:
    """The LangChain example's comment offers ``recall_tool=True``; with the example's fake
    model that fails inside LangChain (the fake model binds no tools), so the README says
    so beside it. Checked both ways: the README warns, and the warning is still true."""
    pytest.importorskip("langchain.agents")
    block = next(b for b in BLOCKS if "OpticalMemoryMiddleware(memory)" in b)
    text = " ".join(README.read_text().split())
    assert "needs a model that binds tools: the fake one here does not" in text
    code = block.replace("OpticalMemoryMiddleware(memory)",
                         "OpticalMemoryMiddleware(memory, recall_tool=True)")
    with pytest.raises(NotImplementedError):
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
