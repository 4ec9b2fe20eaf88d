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


@pytest.mark.parametrize(("line", "key"), [
    ('{"role": "user", "text": "kept", "text": "stored instead"}', "text"),
    ('{"session": "a", "role": "user", "text": "hi", "session": "b"}', "session"),
    ('{"role": "user", "text": "hi", "meta": {"id": 1, "id": 2}}', "id"),
])
def test_a_key_given_twice_is_an_error_of_its_line(line: str, key: str) -> None:
    """JSON keeps the last of two equal keys: the turn's first text was dropped (or a
    second "session" moved it to another session) without a word."""
    turns, errors = parse_transcript([line, '{"role": "user", "text": "fine", "meta": {"a": 1}}'])
    assert [t.text for t in turns] == ["fine"] and turns[0].meta == {"a": 1}
    assert errors[0].line == 1
    assert errors[0].message == f"key {key!r} appears more than once in an object"


def test_a_number_too_long_to_parse_is_named_as_such() -> None:
    """Python refuses integers of over 4300 digits with a message telling the user to call
    sys.set_int_max_str_digits(); the line's error says what is wrong in the file."""
    turns, errors = parse_transcript(['{"role": "user", "text": "hi", "ts": 1' + "0" * 5000 + "}"])
    assert turns == [] and errors[0].message.startswith("a number of more than 4300 digits")
    assert "sys." not in errors[0].message


def test_a_line_without_text_says_so_and_names_content_given_for_it() -> None:
    """A chat API's message ({"role", "content"}) was refused as "turn text must be str or
    UTF-8 bytes, got NoneType", which named neither key."""
    turns, errors = parse_transcript(['{"role": "user", "content": "hi"}',
                                      '{"role": "user"}', '{"role": "user", "text": "ok"}'])
    assert [t.text for t in turns] == ["ok"]
    assert [(e.line, e.message) for e in errors] == [
        (1, 'no "text": a line holds its turn\'s text under "text", not "content"'),
        (2, 'no "text"')]


def test_a_null_session_is_the_default_one_as_a_null_ts_is_no_time() -> None:
    """An exporter that writes every key of its schema writes ``"session": null`` for a
    turn of no session; it was refused ("must be a str, got NoneType") while a null
    ``ts`` already counted as absent."""
    turns, errors = parse_transcript(['{"session": null, "role": "user", "text": "hi", '
                                      '"ts": null}'], default_session="inbox")
    assert errors == [] and [(t.session, t.ts) for t in turns] == [("inbox", None)]
    _, errors = parse_transcript(['{"session": 5, "role": "user", "text": "hi"}'])
    assert len(errors) == 1  # a number is still no session id
