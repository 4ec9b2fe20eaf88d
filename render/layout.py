"""Text → lines → pages on a monospace grid: the layout, as data, before any pixel exists.

Every character sits in a grid cell (wide East Asian characters take two), so a
character's position follows from the text alone. That is what lets the codec train on
the layout and track it while decoding (:class:`Cursor`): one misread character never
shifts the positions of the characters after it on other lines.

The unit of layout is a turn (speaker label, optional timestamp, text). Each turn starts
on a new line; lines wrap at spaces, over-long words are cut at the line end, and the
lines of consecutive turns flow into pages of ``settings.rows`` lines.
"""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np

from opticmem.render.atlas import INVISIBLE, SPACE, SURROGATE, Atlas, load_atlas

REPLACEMENT = "\ufffd"
"""Shown (as a hollow box) for every character no shipped font has."""

DEFAULT_LABELS: tuple[tuple[str, str], ...] = (
    ("user", "User"),
    ("assistant", "Assistant"),
    ("system", "System"),
    ("tool", "Tool"),
)


MAX_PAGE_PIXELS = 8192
"""Largest page side :class:`RenderSettings` takes: 6.4 times the Large tier (1280), about
130 MB to draw (the page and its glyph tiles); a larger page only loses its detail when
resampled to Large."""


@dataclass(frozen=True, slots=True)
class RenderSettings:
    """Everything that decides a page's pixels besides its text.

    The grid is ``columns × rows`` cells of 12×24 pixels inside a ``margin`` on a square
    Large page of ``page_pixels``. The defaults (104 × 52 cells on 1280 pixels) hold about
    1,000 text tokens of chat, the page density the bundled codec is trained on.
    """

    page_pixels: int = 1280
    margin: int = 16
    timestamps: bool = False
    labels: tuple[tuple[str, str], ...] = DEFAULT_LABELS
    tab_width: int = 4
    max_rows: int | None = None
    """Fewer rows than fit (a lighter page); ``None`` fills the page."""

    def __post_init__(self) -> None:
        # Whole numbers only: a float (``page_pixels=1280.0``) laid pages out, but drawing
        # them failed with a bare TypeError, and it gave the same pixels another key.
        for name in ("page_pixels", "margin", "tab_width", "max_rows"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool)) and not (
                name == "max_rows" and value is None
            ):
                raise ValueError(f"{name} must be a whole number (int), got {value!r}")
        if self.page_pixels > MAX_PAGE_PIXELS:
            # Taken, it was drawn as one page_pixels² array (and as many pixels of glyph
            # tiles): 100,000 asked for 20 GB and the process was killed, or MemoryError.
            raise ValueError(
                f"page_pixels must be at most {MAX_PAGE_PIXELS}, got {self.page_pixels}: "
                f"every page is resampled to 1280 pixels at Large, so a larger one only "
                f"loses its detail, and drawing it takes page_pixels² bytes twice")
        if self.page_pixels < 64 or self.margin < 0 or 2 * self.margin >= self.page_pixels:
            raise ValueError(
                f"page_pixels={self.page_pixels} with margin={self.margin} leaves no room for text"
            )
        if self.columns < 8 or self.rows < 1:
            raise ValueError(f"a page needs at least 8 columns and 1 row, got "
                             f"{self.columns}×{self.rows}")
        if not 1 <= self.tab_width <= min(16, self.columns):
            # wider than the line, a tab wrapped into blank lines
            raise ValueError(f"tab_width must be 1..16 and at most the page's "
                             f"{self.columns} columns, got {self.tab_width}")
        # A switch: "no" or "false" (a config file's text) is truthy and drew timestamps,
        # under another settings key than True's.
        if not isinstance(self.timestamps, (bool, np.bool_)):
            raise ValueError(f"timestamps must be True or False, got {self.timestamps!r}")
        object.__setattr__(self, "timestamps", bool(self.timestamps))
        # Taken as given, labels=("user", "User") (one pair, not a tuple of pairs) was only
        # unpacked when a turn was laid out: the add that sealed the first page stored its
        # turn and then raised a bare ValueError, and every context of the memory failed.
        object.__setattr__(self, "labels", _label_pairs(self.labels))

    @property
    def cell_width(self) -> int:
        return load_atlas().cell_w

    @property
    def cell_height(self) -> int:
        return load_atlas().cell_h

    @property
    def columns(self) -> int:
        return (self.page_pixels - 2 * self.margin) // 12

    @property
    def rows(self) -> int:
        fit = (self.page_pixels - 2 * self.margin) // 24
        return min(fit, self.max_rows) if self.max_rows is not None else fit

    def label(self, role: str) -> str:
        for r, lab in self.labels:
            if r == role:
                return lab
        clean = "".join(c for c in role if c.isprintable()).strip()[:24]
        return clean.title() or "Turn"

    def key(self) -> str:
        """A short stable digest of the settings, for cache keys."""
        blob = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _label_pairs(labels: object) -> tuple[tuple[str, str], ...]:
    """``labels`` as a tuple of ``(role, label)`` string pairs (a mapping of role to label,
    or pairs as lists, are taken too, so equal settings compare equal); ``ValueError``
    naming the first entry that is not such a pair."""
    example = "e.g. (('user', 'User'), ('assistant', 'Assistant'))"
    if isinstance(labels, Mapping):
        labels = tuple(labels.items())
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise ValueError(f"labels must be (role, label) pairs, {example}; got {labels!r}")
    pairs: list[tuple[str, str]] = []
    for pair in labels:
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or not all(isinstance(x, str) for x in pair)):
            raise ValueError(f"labels must be (role, label) pairs of strings, {example}; "
                             f"got the entry {pair!r} in {labels!r}")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


@dataclass(frozen=True, slots=True)
class TurnText:
    """One turn as the renderer sees it."""

    role: str
    text: str
    ts: float | None = None


@dataclass(frozen=True, slots=True)
class Line:
    """One drawn line of a turn. ``start:end`` is the span of the turn's text it shows
    (the label and timestamp are not part of the text); ``text`` is what is drawn."""

    text: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class TurnLayout:
    """A turn cut into lines, plus what could not be drawn as written."""

    lines: tuple[Line, ...]
    missing: tuple[str, ...] = ()
    """Characters no font has, each drawn as a replacement box (each listed once)."""
    substituted: tuple[tuple[str, str], ...] = ()
    """``(original, shown)`` for control characters and lone surrogates (each once)."""
    invisible: tuple[str, ...] = ()
    """Zero-width and format characters, which have no ink and are not drawn (each once)."""


@dataclass(frozen=True, slots=True)
class LineSource:
    """Where a page line comes from: ``turn`` indexes the sequence given to :func:`paginate`."""

    turn: int
    line: int
    start: int
    end: int


@dataclass(frozen=True)
class PageLayout:
    """One page: its lines, where each came from, and what could not be drawn."""

    lines: tuple[str, ...]
    sources: tuple[LineSource, ...]
    settings: RenderSettings
    complete: bool
    """True when the page is full (the flow of lines went on to a next page)."""
    missing: tuple[str, ...] = ()
    """The :class:`TurnLayout` fields of the turns with lines on the page, each entry once."""
    substituted: tuple[tuple[str, str], ...] = ()
    invisible: tuple[str, ...] = ()
    _cells: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def transcript(self) -> str:
        """The page's text exactly as drawn, lines joined by ``\\n``: what a codec should read."""
        return "\n".join(self.lines)

    @property
    def turns(self) -> tuple[int, ...]:
        """Indexes of the turns that have lines on this page, in order."""
        return tuple(dict.fromkeys(s.turn for s in self.sources))

    def cells(self) -> dict[str, np.ndarray]:
        """Every drawn character as arrays: ``char`` (code point), ``row``, ``col``, ``width``
        (cells), and ``index`` (its position in :attr:`transcript`). Spaces are omitted."""
        if not self._cells:
            self._cells.update(char_cells(self.transcript))
        return self._cells

    def boxes(self) -> np.ndarray:
        """``(N, 4)`` pixel boxes ``x0, y0, x1, y1`` of :meth:`cells` on the Large page."""
        c = self.cells()
        m, cw, ch = self.settings.margin, 12, 24
        x0 = m + c["col"] * cw
        y0 = m + c["row"] * ch
        return np.stack([x0, y0, x0 + c["width"] * cw, y0 + ch], axis=1)


# --------------------------------------------------------------------------- text preparation


def _display_chars(ch: str, atlas: Atlas) -> tuple[str, str]:
    """Map one input character to what is drawn: ``(shown, kind)`` where kind is
    ``""`` (as is), ``"missing"``, ``"substituted"``, ``"invisible"`` or ``"space"``."""
    if ch == " ":
        return ch, ""
    if atlas.has(ch):
        return ch, ""
    cp = ord(ch)
    kind = atlas.char_class(ch)  # at the atlas's Unicode version, not this Python's
    if cp < 0x20 or cp == 0x7F:  # control pictures where the fonts have them
        pic = chr(0x2400 + cp) if cp < 0x20 else "\u2421"
        return (pic if atlas.has(pic) else REPLACEMENT), "substituted"
    if kind == SURROGATE or 0x80 <= cp < 0xA0:
        return REPLACEMENT, "substituted"
    if kind == INVISIBLE or 0xFE00 <= cp <= 0xFE0F:
        return "", "invisible"
    if kind == SPACE:
        return " " * atlas.width(ch), "space"
    return REPLACEMENT * atlas.width(ch), "missing"


def _composed(line: str, atlas: Atlas) -> str:
    """A drawn line in NFC, as :func:`redraw` would lay it out again.

    The text is NFC before layout, but dropping an invisible character can bring a base
    and a combining mark together (``"a\u200b\u0301"`` draws ``a`` and ``◌́`` side by
    side); :func:`redraw` would compose them into ``á`` and change the line. Composed here,
    the line is drawn that way too, and a composed character with no glyph is a box as
    anywhere else.
    """
    if unicodedata.is_normalized("NFC", line):
        return line
    return "".join(_display_chars(ch, atlas)[0] for ch in unicodedata.normalize("NFC", line))


def has_visible_text(text: str) -> bool:
    """Whether ``text`` holds a character with ink (see :data:`_NO_INK`): what a turn
    needs to be stored, and a file to be worth drawing or evaluating. ``str.strip`` is not
    that test: it keeps U+200B, U+2060 and U+FEFF, which draw nothing."""
    return any(unicodedata.category(c) not in _NO_INK for c in text)


_NO_INK = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})
"""Categories of characters with no ink: controls, format characters and spaces. Private-use
(``Co``) and unassigned (``Cn``) code points are drawn (as a box) and count as text: to
:mod:`unicodedata` every emoji newer than Python's Unicode version is unassigned, and a
reply of just one is a real turn."""


MIN_TS = -62_135_596_800.0
"""Earliest timestamp a page can show: 0001-01-01 00:00 UTC."""

MAX_TS = 253_402_300_799.0
"""Latest timestamp a page can show: 9999-12-31 23:59:59 UTC."""


def iso_seconds(text: str) -> float:
    """An RFC 3339 / ISO 8601 time as Unix seconds, UTC when it names no offset; ``Z`` or
    ``z`` (and ``T`` or ``t``) as RFC 3339 allows, which ``datetime.fromisoformat`` does
    not for the ``z``. ``ValueError`` for any other text. What transcripts' ``ts`` strings
    are read as, by ``opticmem ingest`` and by ``opticmem eval --text-file`` alike.

    >>> iso_seconds("2026-01-02t03:04:05z"), iso_seconds("2026-01-02 04:04:05+01:00")
    (1767323045.0, 1767323045.0)
    """
    try:
        # Not redundant: fromisoformat takes "...05z+00:00", so "...05zz" would pass
        # (test_a_utc_suffix_alone_or_doubled_is_still_refused).
        utc = text.endswith(("Z", "z")) and "z" not in text[:-1].lower()
        stamp = datetime.fromisoformat(text[:-1] + "+00:00" if utc else text)
    except ValueError:
        raise ValueError(f"ts {text!r} is neither Unix seconds nor ISO 8601") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def utc_minute(ts: float) -> str:
    """``ts`` (Unix seconds) as ``YYYY-MM-DD HH:MM`` in UTC, the year always four digits.

    ``time.strftime("%Y")`` pads a year below 1000 on some C libraries (Windows, macOS:
    ``0042``) and not on others (glibc: ``42``), so a page showing such a date would not
    have the same pixels on every machine, and text cut at fixed offsets went wrong.
    A ``ts`` that is not finite or lies outside years 1–9999 (:data:`MIN_TS` to
    :data:`MAX_TS`) raises ``ValueError`` naming it: the memory refuses such turns
    earlier, and a direct caller of the renderer got ``OverflowError`` from ``gmtime``.

    >>> utc_minute(-61_000_000_000.0), utc_minute(1772352720.0)
    ('0036-12-26 11:33', '2026-03-01 08:12')
    >>> utc_minute(1e20)
    Traceback (most recent call last):
    ValueError: timestamp 1e+20 is not Unix seconds within years 1–9999
    """
    if not MIN_TS <= ts <= MAX_TS:  # also False for NaN
        raise ValueError(f"timestamp {ts!r} is not Unix seconds within years 1–9999")
    t = time.gmtime(ts)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}")


def _prefix(turn: TurnText, settings: RenderSettings) -> str:
    label = settings.label(turn.role)
    if settings.timestamps and turn.ts is not None:
        return f"[{utc_minute(turn.ts)}] {label}: "
    return f"{label}: "


def layout_turn(turn: TurnText, settings: RenderSettings | None = None) -> TurnLayout:
    """Cut one turn into drawn lines (pure; same input → same lines).

    >>> layout_turn(TurnText("user", "hello world")).lines[0].text
    'User: hello world'
    """
    settings = settings or RenderSettings()
    return _lay_out(turn.text, _prefix(turn, settings), settings)


def redraw(text: str, settings: RenderSettings | None = None) -> str:
    """``text`` as the renderer would draw it: every line laid out on the grid again.

    A transcript the renderer made comes back unchanged. Text read off a page need not
    obey the grid: on the page, spaces before a line end are invisible and a row of
    spaces looks like an empty line, so a decoder can read either as spaces — a row's
    worth of them. Laid out again, spaces before a line end are dropped and a line wider
    than a row breaks where the renderer would have broken it.

    >>> redraw("done   \\n" + " " * 104 + "\\nnext")
    'done\\n\\nnext'
    >>> [len(line) for line in redraw("word " * 30).split("\\n")]
    [104, 44]
    """
    settings = settings or RenderSettings()
    return "\n".join(
        ln.text for line in text.split("\n") for ln in _lay_out(line, "", settings).lines
    )


def _lay_out(text: str, prefix: str, settings: RenderSettings) -> TurnLayout:
    atlas = load_atlas()
    cols = settings.columns
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = text.replace("\u2028", "\n").replace("\u2029", "\n")

    missing: list[str] = []
    substituted: list[tuple[str, str]] = []
    invisible: list[str] = []
    lines: list[Line] = []

    # Current line: parallel lists of shown characters (one per cell-run) and their offsets.
    cur: list[str] = []
    offs: list[int] = []
    col = 0
    brk = -1  # index in ``cur`` after which the line may break (after a space / wide char)

    def emit(upto: int, at: int) -> None:
        """Close the line at ``cur[:upto]``; ``at`` is the text offset where a line that
        shows none of the text sits (an empty line: the newline that ends it)."""
        nonlocal cur, offs, col, brk
        keep, rest = cur[:upto], cur[upto:]
        keep_offs, rest_offs = offs[:upto], offs[upto:]
        while keep and keep[-1] == " ":  # spaces at a break are not drawn
            keep.pop()
            keep_offs.pop()
        # A line of label and timestamp only (offset -1) starts where the text does.
        start = next((o for o in keep_offs if o >= 0),
                     next((o for o in rest_offs if o >= 0), at))
        end = max((o + 1 for o in keep_offs if o >= 0), default=start)
        lines.append(Line(_composed("".join(keep), atlas), start, end))
        while rest and rest[0] == " " and rest_offs[0] >= 0:
            rest.pop(0)
            rest_offs.pop(0)
        cur, offs = rest, rest_offs
        col = sum(atlas.width(c) if c != " " else 1 for c in cur)
        brk = -1

    def put(shown: str, off: int, rest: int = 0) -> None:
        """Place ``shown``; ``rest`` is the width in cells of the word after it."""
        nonlocal col, brk
        for c in shown:
            w = 1 if c == " " else atlas.width(c)
            if c == " ":
                if col + 1 > cols:
                    emit(len(cur), max(off, 0))
                    continue  # the space that would start the next line is the break
                cur.append(c)
                offs.append(off)
                col += 1
                brk = len(cur)
                continue
            if col + w > cols:
                word = sum(atlas.width(x) for x in cur[brk:]) + w + rest if brk > 0 else 0
                if w == 2 or brk <= 0 or word > cols:
                    # a wide char, no break point, or a word longer than a line
                    emit(len(cur), max(off, 0))
                else:
                    emit(brk, max(off, 0))  # carry the word in progress to the next line
            if w == 2 and cur:
                brk = len(cur)
            cur.append(c)
            offs.append(off)
            col += w
            if w == 2:
                brk = len(cur)

    # Cells from each character to the end of its word (narrow, non-space runs), so an
    # over-long word is cut where it stands instead of first moving to a new line.
    rest_cells = [0] * (len(text) + 1)
    for i in range(len(text) - 1, -1, -1):
        ch = text[i]
        if ch in " \t\n" or atlas.width(ch) == 2:
            rest_cells[i] = 0
        else:
            rest_cells[i] = 1 + rest_cells[i + 1] if i + 1 < len(text) else 1
    for ch in prefix:
        put(_display_chars(ch, atlas)[0] or " ", -1)
    for i, ch in enumerate(text):
        if ch == "\n":
            emit(len(cur), i)
            continue
        if ch == "\t":
            put(" " * (settings.tab_width - col % settings.tab_width), i)
            continue
        shown, kind = _display_chars(ch, atlas)
        if kind == "missing":
            missing.append(ch)
        elif kind == "substituted":
            substituted.append((ch, shown))
        elif kind == "invisible":
            invisible.append(ch)
            continue
        if len(shown) == 2 and kind == "missing" and col + 2 > cols:
            # A wide character's box is two one-cell boxes, but one character: it moves
            # to the next line whole (with the word it ends, as a letter would) rather
            # than leave a half at this line's end.
            word = sum(atlas.width(x) for x in cur[brk:]) + 2 + rest_cells[i + 1] if brk > 0 else 0
            emit(brk if 0 < word <= cols else len(cur), i)
        put(shown, i, rest_cells[i + 1])
    emit(len(cur), len(text))
    # Each character once: every user wants the set, and a page of a long turn copied
    # every occurrence, which made paginating it take pages × occurrences.
    return TurnLayout(tuple(lines), tuple(dict.fromkeys(missing)),
                      tuple(dict.fromkeys(substituted)), tuple(dict.fromkeys(invisible)))


# --------------------------------------------------------------------------- pagination


def paginate(
    turns: Sequence[TurnLayout],
    settings: RenderSettings | None = None,
    *,
    start_line: int = 0,
    count_tokens: Callable[[str], int] | None = None,
    max_tokens: int | None = None,
) -> list[PageLayout]:
    """Flow the lines of consecutive turns into pages.

    ``start_line`` skips lines of the first turn already placed on an earlier page, so a
    store can continue packing mid-turn. With ``count_tokens`` and ``max_tokens`` a page
    also closes before its lines exceed that many text tokens (at least one line a page).
    Every page but possibly the last is ``complete``.
    """
    settings = settings or RenderSettings()
    rows = settings.rows
    pages: list[PageLayout] = []
    buf: list[tuple[str, LineSource, int]] = []
    tokens = 0

    def close(complete: bool) -> None:
        nonlocal buf, tokens
        if not buf:
            return
        turn_ids = dict.fromkeys(src.turn for _, src, _ in buf)
        missing = tuple(dict.fromkeys(c for t in turn_ids for c in turns[t].missing))
        subst = tuple(dict.fromkeys(c for t in turn_ids for c in turns[t].substituted))
        invis = tuple(dict.fromkeys(c for t in turn_ids for c in turns[t].invisible))
        pages.append(
            PageLayout(
                lines=tuple(t for t, _, _ in buf),
                sources=tuple(s for _, s, _ in buf),
                settings=settings,
                complete=complete,
                missing=missing,
                substituted=subst,
                invisible=invis,
            )
        )
        buf, tokens = [], 0

    for ti, tl in enumerate(turns):
        first = start_line if ti == 0 else 0
        for li in range(first, len(tl.lines)):
            line = tl.lines[li]
            n = count_tokens(line.text) if count_tokens and max_tokens else 0
            if len(buf) >= rows or (buf and max_tokens and tokens + n > max_tokens):
                close(complete=True)
            buf.append((line.text, LineSource(ti, li, line.start, line.end), n))
            tokens += n
    close(complete=False)
    return pages


def layout_pages(
    turns: Iterable[TurnText], settings: RenderSettings | None = None
) -> list[PageLayout]:
    """Lay out a whole conversation into pages (the last one may be partial)."""
    settings = settings or RenderSettings()
    return paginate([layout_turn(t, settings) for t in turns], settings)


# --------------------------------------------------------------------------- cell positions


def char_cells(transcript: str) -> dict[str, np.ndarray]:
    """Cell of every non-space character of a transcript: ``char, row, col, width, index``."""
    atlas = load_atlas()
    chars, rows, cols, widths, index = [], [], [], [], []
    row = col = 0
    for i, ch in enumerate(transcript):
        if ch == "\n":
            row, col = row + 1, 0
            continue
        w = 1 if ch == " " else atlas.width(ch)
        if ch != " ":
            chars.append(ord(ch))
            rows.append(row)
            cols.append(col)
            widths.append(w)
            index.append(i)
        col += w
    as_arr = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return {"char": as_arr(chars), "row": as_arr(rows), "col": as_arr(cols),
            "width": as_arr(widths), "index": as_arr(index)}


class Cursor:
    """Tracks the grid cell where the next character of a transcript goes.

    A decoder feeds it the text it has produced so far, piece by piece, and asks where
    the next character will be drawn: ``(row, col)``. Because the grid is monospace this
    needs only the text, never the image.

    >>> c = Cursor(); c.feed("ab\\n한"); c.position
    (1, 2)
    """

    __slots__ = ("_atlas", "col", "row")

    def __init__(self) -> None:
        self._atlas = load_atlas()
        self.row = 0
        self.col = 0

    @property
    def position(self) -> tuple[int, int]:
        return self.row, self.col

    def feed(self, text: str) -> None:
        for ch in text:
            if ch == "\n":
                self.row += 1
                self.col = 0
            else:
                self.col += 1 if ch == " " else self._atlas.width(ch)


def transcript_positions(transcript: str) -> np.ndarray:
    """``(len(transcript)+1, 2)`` array: the ``(row, col)`` cursor *before* each character,
    plus the position after the last. Row/col of ``\\n`` is the end of its line."""
    atlas = load_atlas()
    out = np.empty((len(transcript) + 1, 2), dtype=np.int64)
    row = col = 0
    for i, ch in enumerate(transcript):
        out[i] = (row, col)
        if ch == "\n":
            row, col = row + 1, 0
        else:
            col += 1 if ch == " " else atlas.width(ch)
    out[len(transcript)] = (row, col)
    return out
