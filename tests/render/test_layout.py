"""Layout: wrapping, pagination, bad characters, and the cell positions the codec relies on."""

from __future__ import annotations

import itertools
import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opticmem.render import (
    REPLACEMENT,
    Cursor,
    RenderSettings,
    TurnText,
    char_cells,
    draw_page,
    layout_pages,
    layout_turn,
    load_atlas,
    paginate,
    redraw,
    transcript_positions,
)

S = RenderSettings()


def cells(line: str) -> int:
    atlas = load_atlas()
    return sum(1 if c == " " else atlas.width(c) for c in line)


def test_default_grid_is_104_by_52() -> None:
    assert (S.columns, S.rows) == (104, 52)


def test_label_and_short_text_on_one_line() -> None:
    tl = layout_turn(TurnText("assistant", "Sure — milestones first?"))
    assert [ln.text for ln in tl.lines] == ["Assistant: Sure — milestones first?"]
    assert (tl.lines[0].start, tl.lines[0].end) == (0, len("Sure — milestones first?"))


def test_unknown_role_gets_a_titled_label() -> None:
    assert layout_turn(TurnText("planner", "x")).lines[0].text == "Planner: x"


def test_timestamps_are_optional_and_utc() -> None:
    s = RenderSettings(timestamps=True)
    line = layout_turn(TurnText("user", "hi", ts=0.0), s).lines[0].text
    assert line == "[1970-01-01 00:00] User: hi"


def test_timestamps_before_year_1000_have_four_digit_years() -> None:
    """strftime's %Y is "42" on glibc and "0042" on Windows and macOS: a page with such a
    date did not have the same pixels on every machine."""
    s = RenderSettings(timestamps=True)
    for ts, stamp in ((-62_135_596_800.0, "0001-01-01 00:00"),
                      (-60_000_000_000.0, "0068-09-03 13:20")):
        line = layout_turn(TurnText("user", "hi", ts=ts), s).lines[0].text
        assert line == f"[{stamp}] User: hi"


def test_a_line_holding_only_label_and_timestamp_starts_at_the_text() -> None:
    # On a narrow page the "[date time] Label: " prefix wraps at its own space; the line
    # it leaves behind showed no text and was given start = end = -1, which sliced a
    # continued turn's rest from its last character.
    narrow = RenderSettings(page_pixels=160, margin=16, timestamps=True)
    lines = layout_turn(TurnText("user", "hello world", ts=0.0), narrow).lines
    assert [ln.text for ln in lines] == ["[1970-01-0", "1 00:00]", "User:", "hello", "world"]
    assert [(ln.start, ln.end) for ln in lines] == [(0, 0), (0, 0), (0, 0), (0, 5), (6, 11)]


def test_wraps_at_spaces_and_never_overflows() -> None:
    text = " ".join(["optical"] * 100)
    tl = layout_turn(TurnText("user", text))
    assert len(tl.lines) > 1
    assert all(cells(ln.text) <= S.columns for ln in tl.lines)
    assert all(not ln.text.endswith(" ") for ln in tl.lines)
    # words are never split when they fit on a line
    assert all(w in ("optical", "User:") for ln in tl.lines for w in ln.text.split())


def test_over_long_token_is_hard_wrapped() -> None:
    url = "https://example.com/" + "a" * 300
    tl = layout_turn(TurnText("user", url))
    joined = "".join(ln.text for ln in tl.lines)
    assert joined == "User: " + url[: S.columns - 6] + url[S.columns - 6 :]
    assert all(cells(ln.text) <= S.columns for ln in tl.lines)


def test_wide_characters_take_two_cells() -> None:
    tl = layout_turn(TurnText("user", "한" * 60))
    assert cells(tl.lines[0].text) <= S.columns
    assert len(tl.lines[0].text) == len("User: ") + (S.columns - 6) // 2


def test_the_box_of_a_wide_character_without_a_glyph_is_never_cut_across_lines() -> None:
    # An emoji draws as a two-cell box ("\ufffd\ufffd"); at the last cell of a line its
    # halves went to two lines, and the two lines' spans overlapped on it.
    for text in ("x" * 97 + "\U0001f44d" + "y" * 10, "x" * 96 + " " + "z" * 1 + "\U0001f44d"):
        lines = layout_turn(TurnText("user", text)).lines
        assert not any(ln.text.endswith(REPLACEMENT) for ln in lines[:-1]), lines
        assert all(a.end <= b.start for a, b in itertools.pairwise(lines)), lines
        assert "".join(ln.text for ln in lines).count(REPLACEMENT * 2) == 1


@pytest.mark.skipif(unicodedata.unidata_version != load_atlas().unicode_version,
                    reason="this Python's Unicode version is not the atlas's")
def test_the_shipped_unicode_table_is_the_atlas_versions_database() -> None:
    from opticmem.render.atlas import unicode_properties

    assert unicode_properties(unicodedata).tobytes() == load_atlas().props


def test_pages_do_not_follow_this_pythons_unicode_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Widths and classes of glyph-less characters came from the running Python's
    unicodedata, whose Unicode version changes with Python: on 3.12 (Unicode 15) an emoji
    new in 15.0 took two cells where 3.11 (Unicode 14) gave it one, and a new format
    character vanished instead of drawing as a box, so the same text paged differently."""
    text = ("x" * 96 + " \U0001fae8 shaking face, " + "\U0001f979 \u2066\u0300" * 40) * 3
    turns = [TurnText("user", text), TurnText("assistant", "\U0001fae8" * 300)]
    before = [(p.lines, p.missing) for p in layout_pages(turns)]
    newer = {0x1FAE8: ("W", "So"), 0x1F979: ("N", "Cf"), 0x2066: ("N", "Zs"),
             0x0300: ("W", "Lo")}
    real_width, real_category = unicodedata.east_asian_width, unicodedata.category
    monkeypatch.setattr(unicodedata, "east_asian_width",
                        lambda ch: newer.get(ord(ch), (real_width(ch),))[0])
    monkeypatch.setattr(unicodedata, "category",
                        lambda ch: newer.get(ord(ch), ("", real_category(ch)))[1])
    assert unicodedata.east_asian_width("\U0001fae8") == "W"  # the stand-in is in place
    assert [(p.lines, p.missing) for p in layout_pages(turns)] == before


def test_a_missing_unicode_table_is_a_clear_atlas_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from opticmem.render import atlas

    monkeypatch.setattr(atlas, "UNICODE_FILE", "absent.npz")
    with pytest.raises(atlas.AtlasError, match=r"cannot read the Unicode table .*absent\.npz"):
        atlas.load_atlas.__wrapped__()


def test_newlines_and_tabs() -> None:
    tl = layout_turn(TurnText("user", "a\n\tb\r\nc"))
    assert [ln.text for ln in tl.lines] == ["User: a", "    b", "c"]


def test_bad_characters_are_recorded_never_dropped_silently() -> None:
    text = "ok 😀 bell\x07 zw\u200bj \ud800 end"
    tl = layout_turn(TurnText("user", text))
    shown = "".join(ln.text for ln in tl.lines)
    assert tl.missing == ("😀",)
    assert REPLACEMENT * 2 in shown  # the emoji is wide: two box cells
    assert ("\x07", "\u2407") in tl.substituted or ("\x07", REPLACEMENT) in tl.substituted
    assert ("\ud800", REPLACEMENT) in tl.substituted
    assert tl.invisible == ("\u200b",)
    assert "zwj" in shown


def test_a_page_records_each_bad_character_once_however_long_its_turn() -> None:
    """Every page of a turn used to copy the whole turn's list of every occurrence: a
    1,000,000-character turn of emoji took about a minute to seal (pages × occurrences)."""
    pages = layout_pages([TurnText("user", "😀‍\x07 " * 20_000)], RenderSettings(max_rows=8))
    assert len(pages) > 50
    for p in pages:
        assert p.missing == ("😀",)
        assert p.invisible == ("\u200d",)
        assert len(p.substituted) == 1 and p.substituted[0][0] == "\x07"


def test_scripts_hangul_cjk_arabic_hebrew_have_glyphs() -> None:
    atlas = load_atlas()
    for ch in "한글中文字かなカナعربيעברית€→✓":
        assert atlas.has(ch), f"no glyph for {ch!r} U+{ord(ch):04X}"


def test_pagination_rows_and_completeness() -> None:
    turns = [TurnText("user", " ".join(["word"] * 400))] * 10
    pages = layout_pages(turns)
    assert len(pages) > 1
    assert all(len(p.lines) == S.rows for p in pages[:-1])
    assert all(p.complete for p in pages[:-1]) and not pages[-1].complete
    total = sum(len(layout_turn(t).lines) for t in turns)
    assert sum(len(p.lines) for p in pages) == total


def test_pagination_continues_mid_turn() -> None:
    tls = [layout_turn(TurnText("user", " ".join(["word"] * 2000)))]
    whole = paginate(tls)
    resumed = paginate(tls, start_line=S.rows)
    assert resumed[0].lines == whole[1].lines
    assert resumed[0].sources[0].line == S.rows


def test_max_tokens_closes_pages_early() -> None:
    tls = [layout_turn(TurnText("user", " ".join(["word"] * 2000)))]
    pages = paginate(tls, count_tokens=lambda s: len(s.split()), max_tokens=100)
    assert all(sum(len(ln.split()) for ln in p.lines) <= 100 for p in pages)
    assert len(pages) > len(paginate(tls))


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="no room"):
        RenderSettings(page_pixels=100, margin=60)
    with pytest.raises(ValueError, match="tab_width"):
        RenderSettings(tab_width=0)


@pytest.mark.parametrize("value", ["no", "false", 1, None])
def test_settings_take_timestamps_only_as_a_switch(value: object) -> None:
    """``timestamps="no"`` (a config file's text) is truthy: it drew timestamps, under
    another settings key than ``True``'s."""
    with pytest.raises(ValueError, match="timestamps must be True or False"):
        RenderSettings(timestamps=value)  # type: ignore[arg-type]
    on = RenderSettings(timestamps=np.bool_(True))
    assert on.timestamps is True and on.key() == RenderSettings(timestamps=True).key()


def test_settings_reject_a_tab_wider_than_the_line() -> None:
    """On an 8-column page a 16-column tab wrapped into blank lines."""
    narrow = 2 * 16 + 8 * 12  # 8 columns
    assert RenderSettings(page_pixels=narrow, tab_width=8).columns == 8
    with pytest.raises(ValueError, match="at most the page's 8 columns"):
        RenderSettings(page_pixels=narrow, tab_width=9)


@pytest.mark.parametrize("labels", [("user", "User"), "user", 5, (("user", 5),),
                                    (("user", "User", "x"),)])
def test_settings_reject_labels_that_are_not_role_label_pairs(labels: object) -> None:
    """One pair given for a tuple of pairs was unpacked only when a turn was laid out: the
    add that sealed a page stored its turn, then raised a bare ValueError, and every
    context failed."""
    with pytest.raises(ValueError, match=r"labels must be \(role, label\) pairs"):
        RenderSettings(labels=labels)


def test_settings_take_labels_as_a_mapping_or_lists() -> None:
    pairs = RenderSettings(labels=(("user", "U"), ("assistant", "A")))
    for same in ({"user": "U", "assistant": "A"}, [["user", "U"], ["assistant", "A"]]):
        given = RenderSettings(labels=same)
        assert given == pairs and given.key() == pairs.key() and hash(given) == hash(pairs)
    assert layout_turn(TurnText("assistant", "hi"), pairs).lines[0].text == "A: hi"


def test_control_characters_are_boxes() -> None:
    # The docs promised control pictures (␇); the atlas has none, so each is a box.
    controls = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if chr(c) not in "\t\n\r"]
    tl = layout_turn(TurnText("user", "".join(controls)), RenderSettings())
    assert tl.substituted == tuple((c, REPLACEMENT) for c in controls)
    assert "".join(ln.text for ln in tl.lines) == "User: " + REPLACEMENT * len(controls)


def test_settings_reject_pages_too_large_to_draw() -> None:
    """page_pixels had no upper bound: 100,000 was taken, and drawing a page asked for two
    10 GB arrays (MemoryError, or the process killed) instead of a clear error."""
    for pixels in (8193, 100_000, 10**9):
        with pytest.raises(ValueError, match="page_pixels must be at most 8192"):
            RenderSettings(page_pixels=pixels)
    biggest = RenderSettings(page_pixels=8192)
    assert draw_page(layout_pages([TurnText("user", "hi")], biggest)[0]).shape == (8192, 8192)


def test_settings_reject_zero_max_rows() -> None:
    # max_rows=0 used to be taken as None: a full page, not "fewer rows than fit".
    with pytest.raises(ValueError, match="1 row"):
        RenderSettings(max_rows=0)


@pytest.mark.parametrize("field", ["page_pixels", "margin", "tab_width", "max_rows"])
def test_settings_reject_non_integers(field: str) -> None:
    # 1280.0 used to lay pages out and then fail drawing them with a bare TypeError.
    value = {"page_pixels": 640.0, "margin": 16.0, "tab_width": 4.0, "max_rows": 20.0}[field]
    with pytest.raises(ValueError, match=f"{field} must be a whole number"):
        RenderSettings(**{field: value})
    with pytest.raises(ValueError, match=f"{field} must be a whole number"):
        RenderSettings(**{field: True})


def test_cursor_and_positions_agree_with_cells() -> None:
    page = layout_pages([TurnText("user", "ab 한국 x\ny"), TurnText("assistant", "中 z")])[0]
    t = page.transcript
    pos = transcript_positions(t)
    c = page.cells()
    for k, i in enumerate(c["index"]):
        assert tuple(pos[i]) == (c["row"][k], c["col"][k])
    cur = Cursor()
    for i, ch in enumerate(t):
        assert cur.position == tuple(pos[i])
        cur.feed(ch)
    assert cur.position == tuple(pos[-1])


text_strategy = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x2FFFF), max_size=600
)


@settings(max_examples=150, deadline=None)
@given(text=text_strategy)
def test_layout_keeps_every_visible_character(text: str) -> None:
    """Nothing is lost: the drawn characters are the text's, in order, once each."""
    tl = layout_turn(TurnText("user", text))
    atlas = load_atlas()
    texts = [ln.text for ln in tl.lines]
    assert texts[0].startswith("User:")
    texts[0] = texts[0][len("User:") :]
    drawn = "".join(texts).replace(" ", "")
    norm = unicodedata.normalize(
        "NFC", text.replace("\r\n", "\n").replace("\r", "\n")
    ).replace("\u2028", "\n").replace("\u2029", "\n")
    expected = []
    for ch in norm:
        if ch in " \n\t" or unicodedata.category(ch) == "Zs":
            continue
        if atlas.has(ch):
            expected.append(ch)
        elif ch in tl.invisible:
            continue
        else:
            expected.append(None)  # shown as a substitute or box(es)
    kept = [ch for ch in expected if ch is not None]
    assert all(ch in drawn for ch in kept)
    assert len(drawn) >= len(kept)
    assert all(cells(ln.text) <= S.columns for ln in tl.lines)
    spans = [(ln.start, ln.end) for ln in tl.lines]
    assert all(a <= b for a, b in spans)
    assert [a for a, _ in spans] == sorted(a for a, _ in spans)


@settings(max_examples=60, deadline=None)
@given(text=text_strategy)
def test_char_cells_stay_inside_the_grid(text: str) -> None:
    for page in layout_pages([TurnText("user", text)]):
        c = char_cells(page.transcript)
        if len(c["col"]):
            assert (c["col"] + c["width"]).max() <= S.columns
            assert c["row"].max() < S.rows


@settings(max_examples=80, deadline=None)
@given(text=text_strategy, tab_width=st.integers(1, 8))
def test_redraw_leaves_every_page_the_renderer_made_unchanged(text: str, tab_width: int) -> None:
    narrow = RenderSettings(page_pixels=480, tab_width=tab_width)
    for page in layout_pages([TurnText("user", text)], narrow) + layout_pages(
        [TurnText("assistant", text)]
    ):
        assert redraw(page.transcript, page.settings) == page.transcript


@pytest.mark.parametrize(
    ("text", "drawn"),
    [("a\u200b\u0301", "á"), ("e\ufe0f\u0300!", "è!"), ("o\u2060\u0308 x", "ö x")],
)
def test_redraw_leaves_lines_unchanged_where_an_invisible_character_was_dropped(
    text: str, drawn: str
) -> None:
    """Dropping a zero-width character can bring a base and a combining mark together;
    the line used to keep them apart (``a`` then ``◌́``), which redraw composed into one
    character, so the renderer's own transcript did not come back unchanged."""
    [page] = layout_pages([TurnText("user", text)])
    assert page.lines == (f"User: {drawn}",)
    assert redraw(page.transcript) == page.transcript


def test_redraw_puts_text_read_off_a_page_back_on_the_grid() -> None:
    # A row of spaces read where the page has an empty line, spaces before a line end.
    assert redraw("x = joined\n" + " " * 104 + "\n    y   \n") == "x = joined\n\n    y\n"
    # Too many spaces for one row: the line breaks where the renderer breaks it.
    over = "0: [    EMPTY_LIST" + " " * 90 + "]"
    lines = redraw(over).split("\n")
    assert lines[0] == "0: [    EMPTY_LIST" and lines[1].strip() == "]"
    assert all(cells(line) <= S.columns for line in lines)
    wide = "회의 " * 40  # two cells a syllable: rows break between words, never mid-glyph
    assert all(cells(line) <= S.columns for line in redraw(wide).split("\n"))
    assert redraw(wide).replace("\n", " ").split() == wide.split()
    assert redraw("") == "" and redraw("\n\n") == "\n\n"


@pytest.mark.parametrize("ts", [1e20, -1e20, float("nan"), float("inf")])
def test_a_timestamp_no_page_can_show_is_a_value_error_naming_it(ts: float) -> None:
    """The memory refuses such turns first; a direct caller of the renderer got an
    OverflowError from gmtime (1e20) or a bare ValueError without the timestamp (NaN)."""
    with pytest.raises(ValueError, match="not Unix seconds within years 1–9999"):
        layout_turn(TurnText("user", "hi", ts=ts), RenderSettings(timestamps=True))


def test_the_years_a_page_can_show_end_at_one_and_9999() -> None:
    from opticmem.render.layout import MAX_TS, MIN_TS, utc_minute

    assert utc_minute(MIN_TS) == "0001-01-01 00:00"
    assert utc_minute(MAX_TS) == "9999-12-31 23:59"
