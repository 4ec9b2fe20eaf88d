"""The exact-facts sidecar: strings optical reading gets wrong silently, kept as text.

A blurry page still conveys *what was discussed*; it does not reliably convey
``9f86d081884c``, ``$48,250.00``, ``2026-03-04`` or ``mina.kim@example.com`` — a misread
digit looks as plausible as the right one. So when a page is sealed, the identifiers,
numbers, dates, times, versions, URLs, e-mail addresses, hashes, paths and code spans
on it are extracted from the archived turn text and stored with the page. The context
shows them as one text line after the page image, and recall indexes them.

A bare value says nothing about what it was: ``TITAN-142`` alone cannot answer "which
ticket tracks the payment bug?". So each fact also gets a *cue* — a few content words from
around its mentions on the page, within the same sentence (:func:`page_cues`) — and a
kind, named by the pattern that found it (:func:`fact_kind`: "e-mail address", "ticket
issue key", "date"…). Recall matches questions against facts, cues and kinds together
(:func:`fact_keywords`); what it shows, and the line the context shows, stay the facts
alone.

>>> extract_facts("Ship v0.9.1 on 2026-03-04; budget $48,250.00, see https://x.io/a.")
('v0.9.1', '2026-03-04', '$48,250.00', 'https://x.io/a')
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Sequence

from opticmem.recall import CJK, COMPOUND, MARK, STOPWORDS, UNSEGMENTED, WORD

MAX_FACTS = 32
"""At most this many facts per page (the first ones on the page)."""

MAX_FACT_CHARS = 200
"""Longer matches are left out: a truncated "exact" fact would not be exact."""

CUE_SIDE_WORDS = 4
"""A mention of a fact lends its cue at most this many words on each side (the nearest)."""

MAX_CUE_WORDS = 8
"""At most this many distinct words in one fact's cue, over all its mentions on a page."""

CUE_WINDOW_CHARS = 80
"""Cue words are looked for at most this many characters either side of a mention, so a
cue costs the same on a 200,000-character line as on a short one."""

CUE_CJK_CHARS = 6
"""A CJK, kana or Hangul run (unsegmented text) lends only its characters nearest the
fact: recall matches such runs by character bigrams, so a fragment still matches."""

CUE_UNSEGMENTED_CHARS = 3 * CUE_CJK_CHARS
""":data:`CUE_CJK_CHARS` for a Thai, Lao, Khmer or Myanmar run (also unsegmented, and
matched by bigrams): more characters, as a syllable there is several (consonant, vowel
signs, tone marks) where a CJK character is one."""

_CUE_WORD = re.compile(f"{COMPOUND.pattern}|{WORD.pattern}")
"""A cue word: a word as recall indexes it, a compound (``e-mail``, ``Jae-won``) kept whole."""

_SENTENCE_END = re.compile(r"\n|[.!?](?=\s)|[。！？]")
"""Where a fact's sentence stops for its cue: a line break or closing punctuation."""

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_MONTH_ABBR = r"(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)"
"""Month names a dot may follow (``Apr. 4``): after a whole name it ends the sentence."""

_GLUED = rf"[^\W{UNSEGMENTED.pattern[1:-1]}]"
"""A character that glues onto a word: a letter or digit, but not one of a script written
without spaces (:data:`~opticmem.recall.UNSEGMENTED`: CJK, kana, Hangul, Thai, Lao, Khmer,
Myanmar) — unsegmented text runs straight into its numbers and ids (``가격은15000원``,
``订单号A1234``, ``ราคา15000บาท``), so a run of those characters ends a fact as a space does."""

_STARTS, _ENDS = rf"(?<!{_GLUED})", rf"(?!{_GLUED})"
"""A fact of letters and digits starts where no :data:`_GLUED` character is before it, and
ends where none is after it: ``\\b``, but with CJK counting as no word character."""

_H = r"[0-9a-fA-F]{1,4}"
_IPV6 = (rf"(?=[0-9a-fA-F]{{0,4}}:)(?=[\w:]*\d)"
         rf"(?:(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,7}}:(?:{_H}(?::{_H}){{0,6}})?|::{_H}(?::{_H}){{0,6}})"
         rf"(?![\w:])")
"""An IPv6 address, full or with ``::``, with a digit in it (not C++'s ``abc::def``). The
look-aheads fail fast where no address starts: a word that is not hex digits and a colon."""

_AMOUNT = (r"(?:\d{1,3}(?:(?:[\u00a0\u202f]\d{3})+(?:,\d+)?|(?:[ .]\d{3})+,\d+)(?!\d)"
           r"|\d[\d,]*(?:\.\d+)?)")
"""The number of an amount: ``1,200.50``, or grouped by no-break spaces, or by spaces or
dots with a decimal comma (``1 234,56``, ``1.234,56``), as the number patterns take them."""

_AMOUNT_BEFORE = rf"(?:\d{{1,3}}(?:[ .\u00a0\u202f]\d{{3}})+(?:,\d+)?(?!\d)|{_AMOUNT})"
"""The number of an amount its currency follows: a currency right after it makes a number
grouped by plain spaces or dots one amount, decimals or not (``2 000 €``)."""

_CURRENCY_CODE = (r"(?:USD|EUR|GBP|JPY|KRW|CNY|RMB|CHF|CAD|AUD|NZD|HKD|SGD|INR|SEK|NOK|DKK"
                  r"|PLN|CZK|HUF|RUB|BRL|MXN|TWD|THB|ZAR|TRY)")
"""The ISO 4217 codes an amount is written with (a list: ``10 GPU`` is no amount)."""

_DOLLAR_YEN = r"(?<![A-Za-z])(?:(?:US|HK|NT|NZ|AU?|CA?|SG?|MX|R)\$|(?:CN|JP)[¥￥])"
"""A dollar or yen sign with its country before it: ``HK$500`` is no ``$500``."""

_CJK_MULTIPLIER = r"(?:[十百千万萬亿億兆천백만억조]{1,2})"
"""The multiplier of a CJK amount, glued to its number: ``300万元`` is three million yuan,
``3천만 원`` thirty million won (one or two: ``3百万円``)."""

_FILE_TYPES = (r"py|js|ts|tsx|json|ya?ml|toml|md|txt|csv|sql|sh|rs|go|java|c|h|cpp"
               r"|html?|css|xml|ini|cfg|conf|log|pdf|docx?|xlsx?|pptx?|png|jpe?g|gif|svg|webp"
               r"|zip|tar\.gz|tgz")
"""The file types a name is a file by: code and configuration, and the documents, images
and archives a user sends and asks about (``report_v2.pdf``, ``q1.xlsx``)."""

_FILE_END = rf"(?:{_FILE_TYPES}){_ENDS}"
"""A file type ending a name: a letter or digit after it makes it no file type, but a
Hangul particle or CJK text does (``config.yaml을``, ``main.py를``)."""

_DOTFILE = r"\.(?=[a-z_])"
"""The dot that starts the name of a dotfile or dot-folder (``.env``, ``.config``), before a
lower-case letter: ``.NET`` is no file."""

_MM, _DD = r"(?:1[0-2]|0?[1-9])", r"(?:[12]\d|3[01]|0?[1-9])"
"""A month's and a day's number, for the dates a path, a version or a phone number look
like: ``2026/03/04`` and ``2026.03.04`` are dates, ``2026/99/1`` and ``2026.3.4`` no dates."""

_CJK_MERIDIEM = r"(?:午[前後]|[上下]午|오[전후]) ?"
_CJK_HOUR = r"\d{1,2} ?[時时시](?![間间간])"
_CJK_MINUTE = r"\d{1,2} ?[分분](?: ?\d{1,2} ?[秒초])?"
"""A time written with CJK units: its morning or afternoon, hour (not ``3時間`` or
``3시간``, a count of hours), and minute and second (``午後3時15分``, ``오후 3시 30분 5초``)."""

_URL_CHAR = (r"[^\s<>\"'`\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40"
             r"\uff5b-\uff65\x00-\x1f\x7f-\x9f\xad\u061c\u200b-\u200f\u202a-\u202e"
             r"\u2060-\u2069\ufeff\u00ab\u00bb\u2018-\u201f\u2039\u203a]")
"""A character of a URL: no space, quote (``"'`` nor typographic ``“ ” ‘ ’ „ « » ‹ ›``)
or bracket around it, and no CJK or full-width punctuation (``。``, ``，``, ``「」``,
``（）``): unsegmented text runs straight on after a URL, and a URL never holds those
unencoded. Nor control or invisible format characters: the left-to-right or right-to-left
mark an editor puts after a URL in Arabic or Hebrew text, a zero-width space (a word break
in Thai, Khmer or a web page) or a soft hyphen were taken into the URL, with the next word
after a zero-width space. (``«https://x.io/a»`` and ``“https://x.io/a”`` had their closing
quote in the URL.)"""

_SCHEME = (r"(?<![+.\-])(?<!{glued})[A-Za-z][A-Za-z0-9+.\-]{{1,31}}"
           r"(?<![Hh][Tt][Tt][Pp])(?<![Hh][Tt][Tt][Pp][Ss])://")
"""A URL's scheme other than ``http`` and ``https``, a word of its own of two characters
or more, so no drive letter (``sftp://``, ``redis://``, ``postgresql://``, ``s3://``,
``file://``): ``sftp://host`` was the URL ``ftp://host``, and a connection string no URL
but the "e-mail address" of its password and host (``postgresql://u:p@db.x.io`` gave
``p@db.x.io``). One that ends in ``http`` or ``https`` is a word glued before that scheme
(``voirhttps://x.io``): the URL starts at the ``http``."""

_PATTERNS: tuple[tuple[str, str], ...] = (
    # (pattern, the words that say what kind of fact it is)
    # a scheme is any case (a phone writes "Https://"); "http" and "https" start a URL
    # even glued to the word before them, which no URL scheme ends in (see _SCHEME)
    (rf"(?i:https?)://{_URL_CHAR}+", "url link"),
    (rf"{_SCHEME.format(glued=_GLUED)}{_URL_CHAR}+", "url link"),
    # "www." starts a URL glued to the word before it too (``voirwww.x.io``), but for a
    # "w" (``wwww.x.io`` is no www); one glued to a fact is split from it in _matches
    (rf"(?<![Ww])(?i:www)\.{_URL_CHAR}+", "url link"),
    # local part ≤ 64 (RFC 5321), all of it: one ASCII character of it before the match
    # means a longer one, whose last 64 characters were taken as an address. A word glued
    # before an address is taken into it (``Contactbob@x.io``): nothing tells where a
    # local part starts, and it may hold any of those letters.
    (r"(?<![A-Za-z0-9_.+-])[\w.+-]{1,64}@[\w-]+(?:\.[\w-]+)+", "e-mail address"),
    (r"`[^`\n]{1,120}`", "code"),
    (r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "id uuid"),
    (r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5}|/\d{1,2})?\b", "ip address"),  # port, prefix
    (rf"\[(?<![\w\])]\[){_IPV6}\](?::\d{{1,5}})?|(?<![\w:\[]){_IPV6}(?:/\d{{1,3}})?",
     "ip address"),  # IPv6: [::1]:8080 (not a slice x[::2]), fe80::1, 2001:db8::/32
    (r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?"
     r"(?:Z|[+-]\d{2}:?\d{2})?)?\b", "date"),  # ISO 8601, to the nanosecond, with its zone
    (r"\b\d{4}-W[0-5]\d(?:-[1-7])?\b", "date"),  # an ISO week: 2026-W09, 2026-W09-3
    (r"\b\d{1,2}/\d{1,2}/\d{2,4}\b", "date"),
    (rf"\b(?:\d{{4}}(?:/{_MM}/{_DD}(?!/)|\.(?=\d\d\.\d\d){_MM}\.{_DD}(?!\.\d)|\. {_MM}\. {_DD})"
     rf"|{_DD}\.{_MM}\.(?:19|20)\d\d(?!\.\d))\b",
     "date"),  # 2026/03/04, 2026.03.04, 2026. 3. 4, 4.3.2026: no path or version
    (rf"\b(?:{_MONTH}|{_MONTH_ABBR}\.) \d{{1,2}}(?:st|nd|rd|th)?(?:,? \d{{4}})?\b", "date"),
    (rf"\b\d{{1,2}}(?:st|nd|rd|th)? {_MONTH}(?: \d{{4}})?\b", "date"),
    (rf"\b(?:(?:\d{{4}} ?[年년] ?)?\d{{1,2}} ?[月월] ?\d{{1,2}} ?[日일号號]"
     rf"(?: ?(?:{_CJK_MERIDIEM})?{_CJK_HOUR}(?: ?{_CJK_MINUTE})?)?"
     rf"|\d{{4}} ?[年년] ?\d{{1,2}} ?[月월])",
     "date"),  # 2026年3月4日 15時30分, 2026년 3월 4일 오후 3시, 3月4日, 2026년 3월
    (rf"(?:{_CJK_MERIDIEM}){_CJK_HOUR}(?: ?{_CJK_MINUTE})?|\b{_CJK_HOUR} ?{_CJK_MINUTE}",
     "time"),  # 오후 3시, 午後3時15分, 15時30分 (a bare 3시 may be a count of hours)
    (r"\b\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:\s?[AaPp][Mm])?\b", "time"),
    (rf"(?:{_DOLLAR_YEN}|[$€£¥￥₩]|\b{_CURRENCY_CODE})\s?[-\u2212]?{_AMOUNT}"
     rf"(?:\s?(?:million|billion|[kKmMbB]n?){_ENDS}|{_CJK_MULTIPLIER})?",
     "amount money"),  # $48,250.00, €1 234,56, EUR 1,200, $-5, ￥300万
    (rf"\b{_AMOUNT_BEFORE}{_CJK_MULTIPLIER}?[ \u00a0\u202f]?"
     rf"(?:[€¥円원元]|{_CURRENCY_CODE}{_ENDS})",
     "amount money"),  # 2 000 €, 48,250円, 1,200 EUR, 300万元 (not "42 $HOME": a shell variable)
    (r"\bv?\d+(?:\.\d+){2,3}(?:-[0-9A-Za-z.]+)?(?:\+[0-9A-Za-z.]+)?\b",
     "version"),  # three or four parts, a pre-release and build metadata (1.2.3-rc.1+b.7)
    (r"\bv\d+(?:\.\d+)?\b", "version"),
    (r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{7,}\b", "hash"),
    # a dotfile or dot-folder, its dot kept: .config/a/b, .eslintrc.json, .env, .bashrc —
    # the dot starts a word (no letter, digit or dot before it: a sentence's full stop
    # glued to the next word is none) and a lower-case letter follows it (.NET/C# no path)
    (rf"(?<![\w.]){_DOTFILE}[\w.-]{{0,200}}(?:/[\w.@-]+)+/?", "path"),
    (rf"(?<![\w.]){_DOTFILE}(?:[\w.-]{{0,200}}\.{_FILE_END}|env|[\w-]{{0,60}}(?:rc|ignore)"
     r"|gitconfig|gitattributes|gitmodules|editorconfig|htaccess|bash_profile|profile|netrc|pypirc)"
     r"(?:\.[\w-]+){0,8}(?![\w-])", "file"),  # .env, .env.local, .zshrc, .gitignore
    (r"(?:~|\.{1,2})(?:/[\w.@-]+)+/?"  # ~/a, ./a, ../a
     r"|/(?<![\w.:/]/)[\w.@-]+(?:/[\w.@-]+)+/?"  # /a/b (the look-behind after the "/": faster)
     rf"|\b(?=\w)[\w.-]{{0,200}}(?:(?:/[\w.@-]+){{2,}}/?|/[\w-]{{1,200}}\.{_FILE_END})",
     "path"),  # a/b/c, src/app.py
    (r"(?:\b[A-Za-z]:|\\\\[\w.-]+)\\[\w.@\\-]+", "path"),  # C:\a\b, \\host\share
    # a name starts with a letter or digit: at the "\b" after a word, "$0-.xml" had the
    # file "-.xml" (and "$0-/a/b" the path "-/a/b"), which is of no kind alone
    (rf"\b(?=\w)[\w-]{{1,200}}\.{_FILE_END}", "file"),
    (r"#\d+\b", "ticket issue"),
    (r"\b[A-Z][A-Z0-9]*-\d+\b", "ticket issue key"),  # JIRA-style keys, and T-100
    (r"\b\d{1,200}(?:\.\d{1,200})?[eE][+-]?\d{1,200}\b",
     "number"),  # scientific: 6.02e23, 1e-10 (after "hash": 1234e56 is a short commit too)
    (r"\b[A-Za-z_][A-Za-z0-9]*_[A-Za-z0-9_]+\b", "identifier name"),  # snake_case
    (r"\b[a-z]+(?:[A-Z][a-z0-9]*)+\b", "identifier name"),  # camelCase
    (r"\b(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z0-9]{3,}\b", "id code"),  # letters + digits
    (r"[+-]?\b\d[\d,\u066c]{0,200}(?:[.\u066b]\d+)?\s?[%\uff05\u066a]",
     "percent"),  # 12.5%, ５０％, Arabic ٣٫٥٪
    (r"\b\d{1,3}(?:(?:[\u00a0\u202f]\d{3})+(?:,\d+)?|(?: \d{3})+,\d+)(?!\d)",
     "number"),  # grouped by (no-break) spaces: 1 234,56 — not 234,56
    (r"(?<!\d)(?:(?:\+|\((?=\d{1,4}\)))?\d[\d ().-]{7,}\d|\b[2-9]\d{2}-\d{4})\b",
     "phone number"),  # phone-like digit runs, (02) 3456-7812, a local 555-0199
    (r"(?<![.,\u066b\u066c])\b\d+(?:[.,\u066b\u066c]\d+)+(?![\d])",
     "number"),  # with separators or decimals, Arabic ones too: ١٬٢٣٤٫٥٦
    (r"(?<![.,])\b\d{2,}(?!\d)", "number"),  # two or more digits (also "2026년")
)
"""What counts as a fact. Leftmost match wins; at one position, the first pattern that
matches. A ``\\b`` starts or ends a fact, and one that starts a pattern has no ``|`` after
it outside parentheses (see :func:`_alternative`).

A pattern tried at every character of a long run (an e-mail's local part, a path's or a
file's first name, a percent's digits) scans the run each time, so an unbounded
repetition there takes quadratic time: 20,000 characters of ``x-x-…`` took 8 s. Those
repetitions are bounded — a match longer than :data:`MAX_FACT_CHARS` is left out anyway,
and an e-mail's local part is at most 64 characters. A phone number starts where no digit
is before it: one that fails from a run's first digit fails from any later one too, and
trying each took 6 s on a ``.`` and 20,000 digits."""

_WORDY = frozenset(("path", "file"))
"""Kinds whose facts may hold CJK themselves (a file ``보고서.md``): their ``\\b`` stays the
plain one, so no particle-glued text is taken into the fact."""

_PARTICLE = re.compile(rf"(?<={_GLUED}){UNSEGMENTED.pattern}+[.,;:!?)\]}}'\"]*$")
"""CJK text glued after the letters or digits that end a URL, e-mail address, path or
file (``/etc/hosts를``, ``mina@x.io로``, ``https://x.io/a에서``): a particle or the next
word, not part of the fact. CJK after a ``/`` or ``.`` (``/home/민아``, ``보고서.md``) stays."""

_GLUED_BEFORE = re.compile(rf"{UNSEGMENTED.pattern}+(?={_GLUED})"
                           r"|[\u05d1\u05d4\u05d5\u05db\u05dc\u05de\u05e9]{1,3}-(?![\u0590-\u05ff])")
"""CJK text glued before the letters or digits that start an e-mail address, path or file
(``打开config.yaml``, ``연락처는mina@x.io``): the words before it, not part of the fact.
And the prefixes of Hebrew (and, the, in, to, from, that, as: ``ו ה ב ל מ ש כ``, up to
three) that Hebrew joins by a hyphen to a Latin word or a number (``שלח ל-bob@x.io``,
``ה-config.yaml``, ``ב-3/4/2026``): the address was ``ל-bob@x.io``, the date the "path"
``ב-3/4/2026``. A hyphen before Hebrew letters joins a Hebrew name (``דוח-שנתי.pdf``)."""


def _alternative(i: int, pattern: str, kind: str, *, cjk: bool) -> tuple[str, str]:
    """Pattern ``i`` as ``(lead, group)``: the named group ``k{i}`` of the combined pattern
    and the check before it, for text with CJK in it when ``cjk``: its ``\\b`` made
    :data:`_STARTS` or, the one ending it, :data:`_ENDS` (but for :data:`_WORDY` kinds;
    every ``\\b`` in :data:`_PATTERNS` starts or ends a fact).

    A leading ``\\b`` is the ``lead``, checked before the group is entered (see
    :func:`_combined`). A pattern that starts with ``\\b`` therefore has no ``|`` outside
    parentheses."""
    lead = r"\b" if pattern.startswith(r"\b") else ""
    body = pattern[len(lead):]
    if cjk and kind not in _WORDY:
        end = body.endswith(r"\b")
        body = (body[:-2] if end else body).replace(r"\b", _STARTS) + (_ENDS if end else "")
        lead = _STARTS if lead else ""
    return lead, f"(?P<k{i}>{body})"


def _combined(*, cjk: bool) -> re.Pattern[str]:
    """:data:`_PATTERNS` as one pattern, for text with CJK in it when ``cjk``.

    Consecutive alternatives with the same leading check share it, ``\\b(?:(?P<k13>…)|
    (?P<k14>…)|…)``: most positions are inside a word, and there the one check skips the
    whole run, where each alternative would be entered and failed in turn (extraction takes
    a fifth less time). The alternatives keep their order, so the same one wins."""
    out: list[str] = []
    run: list[str] = []
    run_lead = ""
    for i, (pattern, kind) in enumerate(_PATTERNS):
        lead, group = _alternative(i, pattern, kind, cjk=cjk)
        if run and lead != run_lead:
            out.append(f"{run_lead}(?:{'|'.join(run)})")
            run = []
        if lead:
            run_lead = lead
            run.append(group)
        else:
            out.append(group)
    if run:
        out.append(f"{run_lead}(?:{'|'.join(run)})")
    return re.compile("|".join(out))


_FACT = _combined(cjk=False)
_FACT_CJK = _combined(cjk=True)
""":data:`_FACT` for text with CJK in it (or Thai, Lao, Khmer, Myanmar: any of
:data:`~opticmem.recall.UNSEGMENTED`). Without those the two find the same facts, and the
plain one is some 15% faster."""
_TRAIL = ".,;:!?)]}'\"…—–،؛؟۔।॥։"
"""Punctuation that ends a sentence or clause after a fact, not part of it: the ASCII
signs, an ellipsis or a dash, and the comma, semicolon, question mark or full stop of
Arabic, Urdu, Devanagari and Armenian (``https://x.io/a،`` kept the Arabic comma)."""

_URLS = frozenset(f"k{i}" for i, (_, kind) in enumerate(_PATTERNS) if kind == "url link")
"""The groups of :data:`_FACT` whose facts are URLs."""

_GLUED_HTTP = re.compile(r"(?i:https?)\Z")
"""An ``http`` or ``https`` ending a fact that ``://`` follows: a URL's scheme, glued to a
word the fact is (see :func:`_matches`)."""

_GLUED_WWW = re.compile(r"(?<=[^\W_])(?i:www)\Z")
"""A ``www`` ending a fact after a letter or digit, that a ``.`` and a host follow
(:data:`_WWW_HOST`): a URL's start, glued to a word the fact is (``x42www.x.io``; see
:func:`_matches`). Not after a ``/``: ``/var/www.`` ends a sentence with a path."""

_WWW_HOST = re.compile(r"\.[^\W_]")
"""The dot and first letter or digit of a host after a ``www``."""

_SIGNED = frozenset(f"k{i}" for i, (_, kind) in enumerate(_PATTERNS)
                    if kind in ("number", "amount money", "percent"))
"""The groups of :data:`_FACT` whose facts take a minus sign before them (:data:`_MINUS`)."""

_PARTICLED = frozenset(f"k{i}" for i, (_, kind) in enumerate(_PATTERNS)
                      if kind in ("url link", "e-mail address", *_WORDY))
"""The groups of :data:`_FACT` whose facts may run into a glued particle (:data:`_PARTICLE`)."""

_MINUS = re.compile(rf"(?<![-\u2212.,+]){_STARTS}[-\u2212]")
"""A minus sign (``-`` or U+2212) that makes the number after it negative: one that no
letter, digit or other sign is glued to before it, so ``10-20`` (a range), ``ABC-123``,
``x-15`` and ``--25`` keep their numbers unsigned. Matching it only before a number
found, not as part of the patterns, costs nothing where there is none."""

_TERMINAL_ESCAPE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves
    r"|\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: window title, hyperlinks
    r"|[@-Z\\-_])"  # the two-character escapes
)
"""An ANSI terminal escape (colour, cursor, title): a shell tool's output is full of them,
and read as text their letters stick to the facts beside them (``31mERROR``, ``1mhttps``)."""


def _without_terminal_escapes(text: str) -> str:
    """``text`` with each terminal escape blanked to line breaks of its length: no fact
    takes any of it, and every other character keeps its position. Not spaces: a phone
    number's digits may be spaced (``[\\d ().-]``) and a code span holds any, so the blanks
    of ``200\\x1b[0m 1024`` made one fact ``200     1024`` that the text never showed; no
    pattern takes two line breaks in a row."""
    if "\x1b" not in text:
        return text
    return _TERMINAL_ESCAPE.sub(lambda m: "\n" * len(m.group()), text)


_NARROW = str.maketrans({**{chr(c): chr(c - 0xFEE0) for r in (
    range(0xFF10, 0xFF1A), range(0xFF21, 0xFF3B), range(0xFF41, 0xFF5B)) for c in r},
    "\uff0d": "-", "\uff3f": "_", "\uff03": "#", "\uff0b": "+", "\uff04": "$"})
"""Full-width letters, digits and the signs ids are made of (``－ ＿ ＃ ＋ ＄``), as Japanese
and Chinese input methods type them, to their ASCII forms: one character for one, so a
fact is matched on the narrow text and taken, as it was written, from the same span of
the original (``ＡＢＣ－１２３`` was found as the bare number ``１２３``). Full-width
punctuation that ends a sentence or a URL (``，．：／``) stays as it is."""
_WIDE = re.compile(f"[{re.escape(''.join(map(chr, _NARROW)))}]")
"""A character :data:`_NARROW` changes."""

_MARKED = re.compile(rf"(?<={_GLUED}){MARK}+")
"""The combining marks on a letter or digit (``e\u0301``, as macOS and some keyboards write
``é``): no word characters to :mod:`re`, so a ``\b`` fell between them and the next letter
and the decomposed ``Büro3`` had the fact ``ro3``, ``Café24`` the fact ``24``. Marks on
no such character (an emoji's variation selector, a Thai vowel sign) stay as they are."""
_MARK_LETTER = "\u02b0"
"""What :data:`_MARKED` marks are matched as: a letter (``ʰ``) that is no ASCII letter or
digit, as ``é`` is one, so ``Bu\u0308ro3`` finds what ``Büro3`` does (nothing)."""
_STARTS_MARKED = re.compile(MARK)
"""A combining mark, which no fact starts with: a fact found from one starts inside a word
(:data:`_MARKED` matches the marks after a letter or digit as a letter, so a pattern that
takes letters, such as an e-mail address's local part, could start at them right after a
fact that ended at that letter or digit)."""


def _plain(text: str) -> str:
    """``text`` as the fact patterns match it, one character for one: full-width forms
    narrowed (:data:`_NARROW`), marks on a letter or digit matched as a letter
    (:data:`_MARKED`)."""
    if _WIDE.search(text):
        text = text.translate(_NARROW)
    if _MARKED.search(text):
        text = _MARKED.sub(lambda m: _MARK_LETTER * len(m.group()), text)
    return text


def fact_spans(text: str) -> list[tuple[int, int, str]]:
    """Every fact in ``text`` as ``(start, end, fact)``, in order of appearance (terminal
    escapes are no part of any).

    >>> [f for _, _, f in fact_spans("\x1b[31mFAIL\x1b[0m job 4411: https://ci.io/4411\x1b[0m")]
    ['4411', 'https://ci.io/4411']
    """
    out: list[tuple[int, int, str]] = []
    written = _without_terminal_escapes(text)
    clean = _plain(written)
    changed = clean is not written  # then each fact is taken from the text as written
    for m in _matches(_FACT_CJK if UNSEGMENTED.search(text) else _FACT, clean):
        s, e = m.start(), m.end()
        fact = m.group()
        if m.lastgroup in _PARTICLED and (tail := _PARTICLE.search(fact)):
            e -= len(fact) - tail.start()
            fact = fact[: tail.start()]
        if m.lastgroup in _PARTICLED and (head := _GLUED_BEFORE.match(fact)):
            s += head.end()
            fact = fact[head.end() :]
        if fact[0] not in "`" and fact[-1] in _TRAIL:  # sentence punctuation after a URL…
            stripped = fact.rstrip(_TRAIL)
            if m.lastgroup in _URLS:  # …but a ")" closing one in it
                while (fact[len(stripped) : len(stripped) + 1] == ")"
                       and stripped.count("(") > stripped.count(")")):
                    stripped = fact[: len(stripped) + 1]
            e -= len(fact) - len(stripped)
            fact = stripped
        fact = fact.strip()
        if (s and clean[s - 1] in "-\u2212" and m.lastgroup in _SIGNED
                and (not out or out[-1][1] < s) and _MINUS.match(clean, s - 1)):
            s -= 1  # -12.5, -$5: the sign is part of the value
            fact = clean[s] + fact
        if _STARTS_MARKED.match(written, s):
            continue  # begun at a mark: inside a word an earlier fact ended in ("0٫٠֑@x.io")
        if fact and len(fact) <= MAX_FACT_CHARS:
            out.append((s, e, written[s:e].strip() if changed else fact))
    return out


def _matches(pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text)``, but a fact that ends in a URL's ``http`` or ``https``
    glued to it is matched again in the text up to that scheme, and the URL found from it:
    ``order42https://x.io`` was the id ``order42https`` and no URL, where it is the id
    ``order42`` and the URL ``https://x.io``. So is one that ends in a ``www`` glued to it
    that a host follows (``x42www.x.io`` was the id ``x42www``).

    >>> [m.group() for m in _matches(_FACT, "see order42https://x.io/a x42www.x.io")]
    ['order42', 'https://x.io/a', 'x42', 'www.x.io']
    """
    pos, stop, end = 0, len(text), len(text)
    while True:
        m = pattern.search(text, pos, stop)
        if m is None:
            if stop == end:
                return
            pos, stop = stop, end  # the URL, from its scheme
            continue
        s, e = m.span()
        if (stop == end and m.lastgroup not in _URLS and (
                (text.startswith("://", e)
                 and (glued := _GLUED_HTTP.search(text, max(s + 1, e - 5), e)))
                or (_WWW_HOST.match(text, e)
                    and (glued := _GLUED_WWW.search(text, max(s + 1, e - 3), e))))):
            stop = glued.start()  # the text before the scheme, as if it ended there
            continue
        yield m
        pos = e


def _dedupe(facts: Iterable[str], limit: int) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    if limit < 1:  # the check below comes after a fact is taken: 0 gave one
        return ()
    for f in facts:
        if f not in seen:
            seen[f] = None
            if len(seen) >= limit:
                break
    return tuple(seen)


def extract_facts(text: str, limit: int = MAX_FACTS) -> tuple[str, ...]:
    """The distinct facts in ``text`` in order of first appearance (at most ``limit``)."""
    return _dedupe((f for _, _, f in fact_spans(text)), limit)


def fact_kind(fact: str) -> str:
    """Words naming what kind of fact ``fact`` is (``""`` if it is none), so a question
    that asks for "the e-mail" or "the ticket" finds a fact whose surroundings never said so.

    >>> fact_kind("mina.choi@hanbitdata.co.kr"), fact_kind("TITAN-142"), fact_kind("hello")
    ('e-mail address', 'ticket issue key', '')
    """
    fact = _plain(fact)
    m = _FACT_CJK.match(fact)
    if not m and fact[:1] in "-\u2212":  # -12.5: the kind of what the sign is before
        m = _FACT_CJK.match(fact, 1)
        m = m if m and m.lastgroup in _SIGNED else None
    return _PATTERNS[int(m.lastgroup[1:])][1] if m and m.lastgroup else ""


class FactSpans:
    """The facts of one text with their offsets, searchable by range."""

    __slots__ = ("_ends", "_starts", "spans", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.spans = fact_spans(text)
        self._starts = [s for s, _, _ in self.spans]
        self._ends = [e for _, e, _ in self.spans]

    def overlapping(self, lo: int, hi: int) -> range:
        """Indices of the facts overlapping ``[lo, hi)`` (spans are ordered and disjoint,
        so two binary searches find them)."""
        return range(bisect.bisect_right(self._ends, lo), bisect.bisect_left(self._starts, hi))

    def cue(self, i: int) -> list[str]:
        """Content words around fact ``i`` in its sentence: up to :data:`CUE_SIDE_WORDS`
        before it and as many after it, nearest first kept, in text order. Other facts are
        not cue words (they are facts themselves).

        >>> FactSpans("Noted: TITAN-142 is the payment bug (see #7). Next topic.").cue(0)
        ['Noted', 'payment', 'bug', 'see']
        """
        s, e, _ = self.spans[i]
        lo, hi = _sentence(self.text, s, e)
        before = self._words(lo, s, near_end=True)[-CUE_SIDE_WORDS:]
        return before + self._words(e, hi, near_end=False)[:CUE_SIDE_WORDS]

    def _words(self, lo: int, hi: int, *, near_end: bool) -> list[str]:
        """Content words of ``text[lo:hi]`` outside the facts in it."""
        out: list[str] = []
        pos = lo
        for j in self.overlapping(lo, hi):
            out += _content_words(self.text, pos, self.spans[j][0], near_end=near_end)
            pos = self.spans[j][1]
        return out + _content_words(self.text, pos, hi, near_end=near_end)


def _sentence(text: str, s: int, e: int) -> tuple[int, int]:
    """The stretch around ``text[s:e]`` its cue comes from: its sentence and line, cut to
    :data:`CUE_WINDOW_CHARS` either side."""
    lo = max(0, s - CUE_WINDOW_CHARS)
    for m in _SENTENCE_END.finditer(text, lo, s):
        lo = m.end()
    hi = min(len(text), e + CUE_WINDOW_CHARS)
    end = _SENTENCE_END.search(text, e, hi)
    return lo, end.start() if end else hi


def _content_words(text: str, lo: int, hi: int, *, near_end: bool) -> list[str]:
    """Words of ``text[lo:hi]`` a question may share: no stopwords (recall drops them from
    queries), no bare numbers, no single characters. A word cut by the range's edge is
    left out, except a CJK run, which keeps its :data:`CUE_CJK_CHARS` characters nearest
    the fact (its end when ``near_end``), and a Thai, Lao, Khmer or Myanmar run, which
    keeps its :data:`CUE_UNSEGMENTED_CHARS` nearest."""
    out = []
    for m in _CUE_WORD.finditer(text, lo, hi):
        w = m.group()
        if UNSEGMENTED.search(w):
            n = CUE_CJK_CHARS if CJK.search(w) else CUE_UNSEGMENTED_CHARS
            w = w[-n:] if near_end else w[:n]
        elif (m.start() == lo and lo > 0 and text[lo - 1].isalnum()) or (
            m.end() == hi and hi < len(text) and text[hi].isalnum()
        ):
            continue
        if len(w) > 1 and not w.isdigit() and w.lower() not in STOPWORDS:
            out.append(w)
    return out


Segments = Sequence[tuple[FactSpans, int, int]]
"""A page's turns: ``(FactSpans(turn_text), start, end)`` with the span of each turn's text
drawn on the page."""


def _mentions(segments: Segments) -> Iterator[tuple[FactSpans, int]]:
    """Each fact mention drawn on the page, as ``(spans, index)``, in page order."""
    for spans, lo, hi in segments:
        for i in spans.overlapping(lo, hi):
            yield spans, i


def page_facts(segments: Segments, limit: int = MAX_FACTS) -> tuple[str, ...]:
    """Facts of a page from its turns' ``segments``. A fact that straddles the page edge
    (a URL wrapped onto the next page) is kept whole, on both pages.

    >>> page_facts([(FactSpans("see v1.2.3 and 2026-03-04"), 0, 8)])
    ('v1.2.3',)
    """
    return _dedupe((spans.spans[i][2] for spans, i in _mentions(segments)), limit)


def page_cues(segments: Segments, facts: Sequence[str]) -> tuple[str, ...]:
    """The cue of each of a page's ``facts`` (as :func:`page_facts` gave them): the
    distinct content words around its mentions on the page (:meth:`FactSpans.cue`),
    space-separated, at most :data:`MAX_CUE_WORDS`; ``""`` when there are none.

    >>> segs = [(FactSpans("Total budget is $480,000. 사무실은 테헤란로 231에 있다"), 0, 50)]
    >>> page_cues(segs, page_facts(segs))
    ('Total budget', '사무실은 테헤란로 있다')
    """
    cues: dict[str, dict[str, str]] = {f: {} for f in facts}
    for spans, i in _mentions(segments):
        cue = cues.get(spans.spans[i][2])
        if cue is None or len(cue) >= MAX_CUE_WORDS:
            continue
        for w in spans.cue(i):
            cue.setdefault(w.lower(), w)
            if len(cue) >= MAX_CUE_WORDS:
                break
    return tuple(" ".join(words.values()) for words in cues.values())


def fact_keywords(facts: Sequence[str], cues: Sequence[str]) -> str:
    """What recall finds a page's facts passage by, besides the facts themselves: their
    cues and the kinds of fact on the page (each kind once).

    >>> fact_keywords(("mina@x.io", "2026-03-04"), ("Mina prefers", "launch"))
    'Mina prefers launch e-mail address date'
    """
    kinds = dict.fromkeys(k for k in map(fact_kind, facts) if k)
    return " ".join([*filter(None, cues), *kinds])


def facts_line(facts: Sequence[str]) -> str:
    """The sidecar as the single text line the context shows after a page.

    >>> facts_line(("v0.9.1", "2026-03-04"))
    'Exact facts: v0.9.1 · 2026-03-04'
    """
    return "Exact facts: " + " · ".join(facts) if facts else ""
