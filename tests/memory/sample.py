"""A small deterministic conversation for the memory tests (stands in for the bundled
sample until it ships): a project-planning chat with ids, dates and amounts to recall."""

from __future__ import annotations

import json
import random
from pathlib import Path

START = 1_772_352_000.0  # 2026-03-01T08:00Z

TOPICS = [
    ("Titan", "the launch plan", "TITAN-{n}", "2026-03-{d:02d}"),
    ("Orion", "the data migration", "ORI-{n}", "2026-04-{d:02d}"),
    ("Vega", "the hiring loop", "VEGA-{n}", "2026-05-{d:02d}"),
]
_PROSE = """We should keep the scope small and review the risks with the team before
committing to anything; the last retrospective said estimates slipped because of late reviews."""
FILLER = _PROSE.split()


def turns(n: int = 120, seed: int = 7) -> list[dict[str, object]]:
    """``n`` turns alternating user/assistant, one minute apart."""
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    for i in range(n):
        name, what, ticket, date = TOPICS[(i // 10) % len(TOPICS)]
        role = "user" if i % 2 == 0 else "assistant"
        words = " ".join(rng.choice(FILLER) for _ in range(rng.randint(8, 60)))
        text = f"About {name} and {what}: {words}."
        if i % 5 == 0:
            text += (f" Decision: ticket {ticket.format(n=100 + i)} is due "
                     f"{date.format(d=1 + i % 28)} with budget ${1000 + 37 * i:,}.")
        out.append({"session": "team", "role": role, "text": text, "ts": START + 60.0 * i})
    return out


def questions() -> list[dict[str, object]]:
    """Questions whose answers are exact facts of early (long since paged) turns."""
    out: list[dict[str, object]] = []
    for i in (0, 15, 40):
        _, _, ticket, date = TOPICS[(i // 10) % len(TOPICS)]
        out.append({"question": f"When is ticket {ticket.format(n=100 + i)} due?",
                    "answer_contains": [date.format(d=1 + i % 28)], "turn_seq": i})
    return out


def write(directory: Path, n: int = 120) -> tuple[Path, Path]:
    """Write ``conversation.jsonl`` and ``questions.json``; return their paths."""
    conv = directory / "conversation.jsonl"
    conv.write_text("\n".join(json.dumps(t, ensure_ascii=False) for t in turns(n)) + "\n",
                    encoding="utf-8")
    qs = directory / "questions.json"
    qs.write_text(json.dumps(questions(), indent=1), encoding="utf-8")
    return conv, qs
