"""Transcript parsing (:mod:`opticmem.transcripts`): what each line may hold."""

from __future__ import annotations

import pytest

from opticmem.transcripts import parse_transcript


@pytest.mark.parametrize("ts", [
    "2026-01-02T03:04:05Z", "2026-01-02t03:04:05z", "2026-01-02T03:04:05z",
    "2026-01-02 03:04:05Z", "2026-01-02T03:04:05+00:00", "2026-01-02T03:04:05",
    "2026-01-02T04:04:05+01:00",
])
def test_rfc3339_timestamps_in_either_case_are_utc(ts: str) -> None:
    """RFC 3339 takes a lowercase "z" (and "t"); "2026-01-02t03:04:05z" was refused as
    "neither Unix seconds nor ISO 8601"."""
    turns, errors = parse_transcript([f'{{"role": "user", "text": "hi", "ts": "{ts}"}}'])
    assert errors == [] and turns[0].ts == 1767323045.0


@pytest.mark.parametrize("ts", ["z", "Z", "2026-01-02T03:04:05zz", "2026-01-02T03:04:05+00:00Z"])
def test_a_utc_suffix_alone_or_doubled_is_still_refused(ts: str) -> None:
    turns, errors = parse_transcript([f'{{"role": "user", "text": "hi", "ts": "{ts}"}}'])
    assert turns == [] and "neither Unix seconds nor ISO 8601" in errors[0].message
