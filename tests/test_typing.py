"""A user's script, written the way the README shows, type-checks under ``mypy --strict``
against the package as installed (py.typed): the public names are exported with precise
types, and the string options that take only a few names reject the others."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

USER_SCRIPT = '''
from __future__ import annotations

import asyncio
from typing import Any, assert_type

from opticmem import (
    CodecError, Context, OpticalMemory, OpticMemError, Passage, Turn,
)
from opticmem.encoder import Codec
from opticmem.integrations import (
    AsyncMemoryChat, MemoryChat, UnsupportedReplyError, with_memory,
)

mem = OpticalMemory(budget_tokens=8192, codec=None, policy="age", cost_model="openai")
assert_type(mem.add("alice", "user", "Let's plan Project Titan for March."), Turn)
ctx = mem.context("alice")
assert_type(ctx, Context)
assert ctx.cost <= 8192
print(ctx.text(), ctx.messages(format="openai"))
for p in mem.recall("alice", "what did we decide about Titan?", include_original=True):
    assert_type(p, Passage)
    print(p.page_no, p.first_seq, p.last_seq, p.tier, p.confidence, p.text[:80])
assert_type(mem.codec, Codec | None)


def echo(messages: list[dict[str, Any]]) -> str:
    return "you said: " + str(messages[-1]["content"])


async def aecho(messages: list[dict[str, Any]]) -> str:
    return "you said: " + str(messages[-1]["content"])


chat = with_memory(echo, mem, session="alice")
assert_type(chat, MemoryChat[str])
achat = with_memory(aecho, mem, session="bob")
assert_type(achat, AsyncMemoryChat[str])


async def main() -> str:
    return await achat("hello")

assert_type(asyncio.run(main()), str)

try:
    chat("hello")
except UnsupportedReplyError as exc:
    assert_type(exc, UnsupportedReplyError)
    err: OpticMemError = exc
except CodecError:
    pass
'''

MISUSE = '''
from opticmem import OpticalMemory

OpticalMemory(policy="rnak")
'''


def test_readme_usage_type_checks_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    # The package laid out as installed (what `make lint` does): mypy cannot follow the
    # editable install's import hook.
    pkg = tmp_path / "site" / "opticmem"
    shutil.copytree(ROOT / "memory", pkg, ignore=shutil.ignore_patterns("data", "__pycache__"))
    for sub in ("render", "encoder", "integrations"):
        shutil.copytree(ROOT / sub, pkg / sub,
                        ignore=shutil.ignore_patterns("fonts", "weights", "eval_sources",
                                                      "__pycache__"))
    # An installed package's own errors are not the user's: mypy silences them.
    (tmp_path / "mypy.ini").write_text(textwrap.dedent(f"""\
        [mypy]
        strict = True
        mypy_path = {tmp_path / "site"}
        cache_dir = {tmp_path / "cache"}
        [mypy-opticmem.*]
        follow_imports = silent
        """))
    (tmp_path / "user.py").write_text(USER_SCRIPT)
    (tmp_path / "misuse.py").write_text(MISUSE)
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(tmp_path / "mypy.ini"),
         "user.py", "misuse.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    user = [line for line in errors if line.startswith("user.py")]
    assert not user, run.stdout
    misuse = [line for line in errors if line.startswith("misuse.py")]
    assert len(misuse) == 1 and re.search(r"misuse\.py:4: .*'rnak'.*\[arg-type\]", misuse[0]), (
        run.stdout + run.stderr)
