"""Write the bundled demo conversation and its recall questions from the source text.

The conversation ("Project Titan": a program manager and an assistant over four weeks,
with a partner in Seoul) is written by hand in ``tools/sample_conversation/week*.txt``
in a small line format:

- ``@@ 2025-02-03 08:42 -08:00`` sets the clock (local time with its UTC offset);
- a line starting ``U: `` or ``A: `` starts a user or assistant turn; the lines that
  follow, up to the next marker, belong to it.

This script turns it into ``memory/data/sample_conversation.jsonl`` (one JSON object per
turn: ``session``, ``role``, ``text``, ``ts`` in unix seconds) and writes
``memory/data/sample_questions.json``: demo recall questions, each with the strings a
correct answer contains and ``turn_seq``, the 0-based position of the turn that first
states the answer. Timestamps follow the clock: after each marker, a turn comes later by
a reading and typing (or answering) time that grows with the text's length::

    python tools/write_sample_conversation.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tools" / "sample_conversation"
OUT = ROOT / "memory" / "data" / "sample_conversation.jsonl"
QUESTIONS_OUT = ROOT / "memory" / "data" / "sample_questions.json"
SESSION = "demo"

_CLOCK = re.compile(r"^@@ (\d{4}-\d{2}-\d{2} \d{2}:\d{2}) ([+-]\d{2}:\d{2})$")

# (question, strings the answer contains, a string that first appears in the turn that
# states the answer — it pins turn_seq to the decision rather than to an earlier mention)
QUESTIONS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("What did we decide about the Titan launch date?", ("May 13",),
     "Marcus approved the May 13 launch date on Feb 5"),
    ("What is Mina's e-mail?", ("mina.choi@hanbitdata.co.kr",), "mina.choi@hanbitdata.co.kr"),
    ("Which ticket tracks the payment bug?", ("TITAN-142",),
     "is the payment duplicate bug (webhook retries)"),
    ("What was Titan's original total budget?", ("$480,000",), "Total budget is $480,000"),
    ("How much extra did Marcus approve for load testing?", ("$35,000",),
     "Marcus Webb approved an additional $35,000 for load testing"),
    ("Which database did we choose for Titan's analytics?", ("ClickHouse",),
     "Decision: ClickHouse for analytics"),
    ("Where is Hanbit Data's office in Seoul?", ("테헤란로 231",), "테헤란로 231"),
    ("When does the Titan beta start?", ("March 24",),
     "We'll tell them the beta starts on March 24"),
)


@dataclass(frozen=True)
class Turn:
    role: str
    text: str
    ts: int


def parse(paths: list[Path]) -> list[Turn]:
    """Read the source files in order and time-stamp every turn."""
    turns: list[Turn] = []
    clock: float | None = None
    fresh_clock = False
    role: str | None = None
    lines: list[str] = []

    def flush() -> None:
        nonlocal clock, fresh_clock, role, lines
        if role is None:
            return
        text = "\n".join(lines).strip("\n")
        if not text.strip():
            raise ValueError(f"empty {role} turn after turn {len(turns)}")
        if clock is None:
            raise ValueError("a turn comes before the first @@ clock line")
        if not fresh_clock:
            prev = turns[-1].text if turns else ""
            if role == "user":  # read the answer, then type
                clock += 30 + min(len(prev) / 25, 240) + min(len(text) / 5, 300)
            else:  # the assistant answers
                clock += 6 + min(len(text) / 150, 40)
        ts = int(clock)
        if turns and ts <= turns[-1].ts:
            raise ValueError(f"time goes backwards at turn {len(turns)}: {text[:40]!r}")
        turns.append(Turn(role, text, ts))
        fresh_clock = False
        role, lines = None, []

    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = _CLOCK.match(line)
            if m:
                flush()
                local = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M")
                sign = 1 if m.group(2)[0] == "+" else -1
                hh, mm = map(int, m.group(2)[1:].split(":"))
                tz = dt.timezone(sign * dt.timedelta(hours=hh, minutes=mm))
                new = local.replace(tzinfo=tz).timestamp()
                if clock is not None and new <= clock:
                    raise ValueError(f"{path.name}:{n}: clock goes backwards")
                clock, fresh_clock = new, True
            elif line.startswith(("U: ", "A: ")):
                flush()
                role = "user" if line[0] == "U" else "assistant"
                lines = [line[3:]]
            elif role is not None:
                lines.append(line)
            elif line.strip():
                raise ValueError(f"{path.name}:{n}: text outside a turn: {line[:40]!r}")
    flush()
    return turns


def questions(turns: list[Turn]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for question, answer, anchor in QUESTIONS:
        seq = next((i for i, t in enumerate(turns) if anchor in t.text), None)
        if seq is None:
            raise ValueError(f"no turn contains the anchor {anchor!r}")
        missing = [a for a in answer if a not in turns[seq].text]
        if missing:
            raise ValueError(f"turn {seq} (anchor {anchor!r}) lacks {missing}")
        out.append({"question": question, "answer_contains": list(answer), "turn_seq": seq})
    return out


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    paths = sorted(SOURCE.glob("week*.txt"))
    turns = parse(paths)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8", newline="\n") as f:
        for t in turns:
            f.write(json.dumps({"session": SESSION, "role": t.role, "text": t.text, "ts": t.ts},
                               ensure_ascii=False) + "\n")
    qs = questions(turns)
    QUESTIONS_OUT.write_text(json.dumps(qs, ensure_ascii=False, indent=2) + "\n",
                             encoding="utf-8")
    days = (turns[-1].ts - turns[0].ts) / 86400
    print(f"{len(turns)} turns over {days:.1f} days, {OUT.stat().st_size / 1024:.0f} KB → {OUT}")
    print(f"{len(qs)} questions → {QUESTIONS_OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
