"""A fixed multilingual page used by the determinism tests (here and on the GPU machine)."""

from __future__ import annotations

from opticmem.render import PageLayout, TurnText, layout_pages

TURNS = [
    TurnText(
        "user",
        "Let's plan Project Titan for March. Budget: $48,250.00; owner mina.kim@example.com",
        1772352000.0,
    ),
    TurnText(
        "assistant",
        "Sure — milestones first?\n  1. Design review (2026-03-04)\n  2. Beta `v0.9.1`\n"
        "\tsha256: 9f86d081884c7d659a2feaa0c55ad015",
        1772352060.0,
    ),
    TurnText(
        "user",
        "서울 파트너와 회의는 목요일 오후 3시입니다. 中文字符 かな カナ עברית عربي 😀 ok\x07",
        1772352120.0,
    ),
    TurnText("assistant", "https://example.com/" + "a" * 150 + " " + "word " * 300, 1772352180.0),
]


def sample_page() -> PageLayout:
    return layout_pages(TURNS)[0]
