"""The synthetic transcript generator: determinism, train/eval disjointness, coverage, pages.

Most tests read the committed fixture (a small slice of an export, so they run on a
clean clone without wordfreq); one builds small sources in-process where Faker and
wordfreq are importable.
"""

from __future__ import annotations

import codecs
import importlib.util
import itertools
import json
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opticmem.encoder import synth
from opticmem.encoder.synth import (
    SPLITS,
    SYMBOLS,
    Split,
    SynthDataError,
    generate_conversation,
    load_sources,
    page_stream,
    pseudo_symbols,
    pseudo_words,
    read_sources,
    read_turns,
    text_file_pages,
    word_tokens,
)
from opticmem.render import RenderSettings, TurnText, load_atlas

FIXTURE = Path(__file__).parent / "fixtures" / "synth"
HANGUL = re.compile(r"[가-힣]")
URL = re.compile(r"https?://\S+")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\b")
HEX = re.compile(r"\b[0-9a-f]{32,}\b")
ORDER = re.compile(r"\bORD-\d{5}-[A-Z]{2}\b")
MONEY = re.compile(r"[$€£₩¥]\s?\d|\d원|USD \d|EUR \d")
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b(January|February|March|April|May|June|July|August|"
                  r"September|October|November|December) \d{1,2}\b|\d{1,2}월 \d{1,2}일")
TIME = re.compile(r"\b\d{1,2}:\d{2}\b|\b\d{1,2}(am|pm)\b|오[전후] \d{1,2}시")


def convs(split: Split, n: int, start: int = 0) -> list[list[TurnText]]:
    return [generate_conversation(seed, split, data_dir=FIXTURE) for seed in range(start,
                                                                                   start + n)]


def texts(conversations: list[list[TurnText]]) -> Iterator[str]:
    for c in conversations:
        for t in c:
            yield t.text


@pytest.fixture(scope="module")
def train_convs() -> list[list[TurnText]]:
    return convs("train", 250)


@pytest.fixture(scope="module")
def eval_convs() -> list[list[TurnText]]:
    return convs("eval", 250)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_conversation() -> None:
    for split in SPLITS:
        a = generate_conversation(11, split, data_dir=FIXTURE)
        b = generate_conversation(11, split, data_dir=FIXTURE)
        assert a == b and len(a) >= 2
        assert a != generate_conversation(12, split, data_dir=FIXTURE)


def test_same_seed_same_pages() -> None:
    def first(seed: int) -> list[str]:
        stream = page_stream(seed, "train", data_dir=FIXTURE)
        return [p.transcript for p in itertools.islice(stream, 5)]

    assert first(3) == first(3)
    assert first(3) != first(4)


def test_splits_differ_for_the_same_seed() -> None:
    a = generate_conversation(5, "train", data_dir=FIXTURE)
    b = generate_conversation(5, "eval", data_dir=FIXTURE)
    assert [t.text for t in a] != [t.text for t in b]


def test_generation_does_not_import_faker_wordfreq_or_torch() -> None:
    code = (
        "import sys\n"
        "from opticmem.encoder.synth import generate_conversation\n"
        f"generate_conversation(1, 'train', data_dir={str(FIXTURE)!r})\n"
        "print(sorted(m for m in ('faker', 'wordfreq', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- disjointness


def _only(split: Split) -> set[str]:
    """Words of ``split``'s vocabulary that the other split does not have (outside the core)."""
    mine, other = (load_sources(s, FIXTURE) for s in (split, "eval" if split == "train"
                                                      else "train"))
    return (set(mine.en_words) | set(mine.ko_words)) - set(other.en_words) - set(other.ko_words)


def test_no_eval_word_in_training_text(train_convs: list[list[TurnText]]) -> None:
    eval_only = _only("eval")
    assert len(eval_only) > 1_000
    seen = {w for t in texts(train_convs) for w in word_tokens(t)}
    leaked = seen & eval_only
    assert not leaked, f"eval-only words in training text: {sorted(leaked)[:20]}"
    # and the training text does use its own split's vocabulary, not only the core
    assert len(seen & _only("train")) > 500


def test_no_train_word_in_eval_text(eval_convs: list[list[TurnText]]) -> None:
    seen = {w for t in texts(eval_convs) for w in word_tokens(t)}
    leaked = seen & _only("train")
    assert not leaked, f"train-only words in eval text: {sorted(leaked)[:20]}"


def test_sources_are_disjoint() -> None:
    train, ev = load_sources("train", FIXTURE), load_sources("eval", FIXTURE)
    assert train.modules and ev.modules
    assert not set(train.modules) & set(ev.modules), "a stdlib module is in both splits"
    assert not set(train.code) & set(ev.code)
    for kind in synth.POOL_KINDS:
        assert not set(train.pools[kind]) & set(ev.pools[kind]), f"pool {kind} overlaps"


def test_template_sets_are_disjoint() -> None:
    a, b = synth.templates("train"), synth.templates("eval")
    for key, full in synth._SPLIT_T.items():
        assert a[key] and b[key], f"template list {key} leaves a split empty"
        assert not set(a[key]) & set(b[key])
        assert sorted(a[key] + b[key]) == sorted(full)


def test_eval_code_comes_from_eval_modules() -> None:
    # Snippets from an eval-only module (e.g. its own function names) never show up in
    # training text; spot-check that training code blocks are training snippets.
    train = load_sources("train", FIXTURE)
    ev_code = set(load_sources("eval", FIXTURE).code)
    found = 0
    for c in convs("train", 120, start=1000):
        for t in c:
            for block in re.findall(r"```\w*\n(.*?)\n```", t.text, flags=re.S):
                assert block not in ev_code
                found += block in train.code
    assert found > 0


# --------------------------------------------------------------------------- coverage


def _rate(conversations: list[list[TurnText]], pattern: re.Pattern[str]) -> float:
    return sum(any(pattern.search(t.text) for t in c) for c in conversations) / len(
        conversations)


@pytest.mark.parametrize("name, pattern, low", [
    ("hangul", HANGUL, 0.15),
    ("url", URL, 0.25),
    ("email", EMAIL, 0.30),
    ("code fence", re.compile(r"^```", re.M), 0.25),
    ("markdown table", re.compile(r"^\|.*\|$", re.M), 0.15),
    ("markdown list", re.compile(r"^(\d+\.|-|\*|•) ", re.M), 0.40),
    ("money", MONEY, 0.50),
    ("date", DATE, 0.50),
    ("time", TIME, 0.30),
    ("uuid or hex digest", re.compile(f"{UUID.pattern}|{HEX.pattern}"), 0.05),
    ("order id", ORDER, 0.03),
    ("digit", re.compile(r"\d"), 0.90),
])
def test_coverage_per_conversation(train_convs: list[list[TurnText]], name: str,
                                   pattern: re.Pattern[str], low: float) -> None:
    rate = _rate(train_convs, pattern)
    assert rate >= low, f"{name} in {rate:.0%} of conversations, expected ≥ {low:.0%}"


def test_roles_and_turn_lengths_vary(train_convs: list[list[TurnText]]) -> None:
    roles = {t.role for c in train_convs for t in c}
    assert roles == {"system", "user", "assistant", "tool"}
    lengths = sorted(len(t.text) for c in train_convs for t in c)
    assert lengths[len(lengths) // 10] < 60, "one-liners are common"
    assert lengths[-len(lengths) // 20] > 900, "long answers are common"
    assert lengths[-1] > 2_500, "some answers are very long"
    turns = [len(c) for c in train_convs]
    assert min(turns) <= 3 and max(turns) >= 25


def test_large_vocabulary(train_convs: list[list[TurnText]]) -> None:
    words = Counter(w for t in texts(train_convs) for w in word_tokens(t) if w.isascii())
    vocab = load_sources("train", FIXTURE).en_words
    # the fixture keeps ~5,000 words per split (the full export ~46,000): most get used
    assert len(words) > 0.9 * len(vocab)
    assert words.most_common(1)[0][0] == "the", "Zipf-like: 'the' is the most frequent word"


def test_timestamps_increase(train_convs: list[list[TurnText]]) -> None:
    for c in train_convs[:50]:
        ts = [t.ts for t in c if t.ts is not None]
        assert len(ts) == len(c)
        assert ts == sorted(ts)


# --------------------------------------------------------------------------- pages


def test_pages_fit_the_grid() -> None:
    settings = RenderSettings()
    atlas = load_atlas()
    pages = list(itertools.islice(page_stream(0, "train", settings, data_dir=FIXTURE), 80))
    assert any(not p.complete for p in pages), "some partial pages are yielded"
    assert sum(p.complete for p in pages) > len(pages) / 2
    for p in pages:
        assert 1 <= len(p.lines) <= settings.rows
        if p.complete:
            assert len(p.lines) == settings.rows
        for line in p.lines:
            assert "\n" not in line
            assert sum(1 if c == " " else atlas.width(c) for c in line) <= settings.columns
    full = [len(p.transcript) for p in pages if p.complete]
    assert sum(full) / len(full) > 1_500, "complete pages are dense"


def test_partial_rate_bounds() -> None:
    with pytest.raises(ValueError):
        next(page_stream(0, "train", partial_rate=1.5, data_dir=FIXTURE))
    pages = list(itertools.islice(page_stream(0, "eval", partial_rate=0.0, data_dir=FIXTURE),
                                  30))
    assert all(p.complete for p in pages)


def _shape(text: str) -> str:
    """Each character's class: what pseudo-words must keep."""
    return "".join("A" if c.isascii() and c.isupper() else "a" if c.isascii() and c.isalpha()
                   else "H" if "\uac00" <= c <= "\ud7a3" else c for c in text)


@given(st.text(alphabet=st.sampled_from("aZq09 _-.:'\n가힣서울é€😀"), max_size=80),
       st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.3, 1.0]))
def test_pseudo_words_keep_every_cell_and_case(text: str, seed: int, rate: float) -> None:
    out = pseudo_words(text, random.Random(seed), rate)
    assert _shape(out) == _shape(text)
    single = re.compile(r"(?<![A-Za-z])[A-Za-z](?![A-Za-z])")
    assert single.findall(out) == single.findall(text)  # "I", "a" stay
    if rate == 0.0:
        assert out == text


def test_pseudo_words_replace_about_the_asked_share() -> None:
    words = " ".join(["reading"] * 2000)
    out = pseudo_words(words, random.Random(3), 0.25).split()
    share = sum(w != "reading" for w in out) / len(out)
    assert 0.2 < share < 0.3
    with pytest.raises(ValueError, match="rate"):
        pseudo_words("x", random.Random(0), 1.5)


@pytest.mark.parametrize("option", ["pseudo_rate", "symbol_rate"])
def test_pseudo_text_changes_characters_but_not_layouts(option: str) -> None:
    """Pseudo-words and pseudo-symbols redraw characters within their class (letter case,
    Hangul, symbol) and leave every line exactly as long as it was."""
    plain = list(itertools.islice(page_stream(4, "train", data_dir=FIXTURE), 12))
    mixed = list(itertools.islice(page_stream(4, "train", data_dir=FIXTURE, **{option: 0.3}),
                                  12))
    assert [p.lines for p in plain] != [p.lines for p in mixed]
    as_class = str.maketrans(dict.fromkeys(SYMBOLS, "S"))
    for a, b in zip(plain, mixed, strict=True):
        assert [_shape(line).translate(as_class) for line in a.lines] == [
            _shape(line).translate(as_class) for line in b.lines]
    with pytest.raises(ValueError, match=option):
        next(page_stream(0, "train", data_dir=FIXTURE, **{option: -0.1}))


@given(st.text(alphabet=st.sampled_from("aZ09 _-.:/'\n가€°–😀\t"), max_size=80),
       st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.3, 1.0]))
def test_pseudo_symbols_redraw_only_symbols(text: str, seed: int, rate: float) -> None:
    out = pseudo_symbols(text, random.Random(seed), rate)
    assert len(out) == len(text)
    for a, b in zip(text, out, strict=True):
        assert a == b or (a in SYMBOLS and b in SYMBOLS)  # letters, digits, spacing kept
    if rate == 0.0:
        assert out == text


def test_pseudo_symbols_replace_about_the_asked_share_and_check_the_rate() -> None:
    atlas = load_atlas()
    assert all(atlas.has(c) and atlas.width(c) == 1 for c in SYMBOLS)  # one cell each
    out = pseudo_symbols("/" * 4000, random.Random(5), 0.4)
    share = sum(c != "/" for c in out) / len(out)
    assert 0.35 < share < 0.42  # 0.4 drawn, 1 in len(SYMBOLS) of them draws "/" again
    with pytest.raises(ValueError, match="rate"):
        pseudo_symbols("x", random.Random(0), -0.5)


def test_text_file_pages_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    rows = [{"role": "user", "text": "When is the Titan launch?", "ts": 1},
            {"role": "assistant", "text": "May 6, 2025.\n\n" + "word " * 2000}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    pages = text_file_pages(path)
    assert len(pages) >= 2 and pages[0].complete and not pages[-1].complete
    assert pages[0].lines[0] == "User: When is the Titan launch?"
    assert pages[0].lines[1] == "Assistant: May 6, 2025."


def test_text_file_pages_plain_and_labelled(tmp_path: Path) -> None:
    plain = tmp_path / "notes.txt"
    plain.write_text("line one\nline two\n", encoding="utf-8")
    assert read_turns(plain) == [TurnText("user", "line one\nline two")]
    labelled = tmp_path / "chat.txt"
    labelled.write_text("User: hi\nthere\nAssistant: hello\n", encoding="utf-8")
    assert read_turns(labelled) == [TurnText("user", "hi\nthere"),
                                    TurnText("assistant", "hello")]
    assert text_file_pages(labelled)[0].lines == ("User: hi", "there", "Assistant: hello")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"role": "user"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        read_turns(bad)


def test_read_turns_leaves_out_turns_with_nothing_visible(tmp_path: Path) -> None:
    # strip() keeps U+200B (and U+FEFF, U+2060): a turn of them became a page reading
    # just "User:", scored as if the file held text.
    assert read_turns(transcript(tmp_path, "zw.txt", "\u200b\u200b\n")) == []
    labelled = transcript(tmp_path, "chat.txt",
                          "User: \u200b\ufeff\nAssistant: hi\u200b\nUser: \u2060 \n")
    assert read_turns(labelled) == [TurnText("assistant", "hi\u200b")]
    jsonl = transcript(tmp_path, "chat.jsonl",
                       '{"text": "\\u200b"}\n{"role": "assistant", "text": "\\u200bok"}\n')
    assert read_turns(jsonl) == [TurnText("assistant", "\u200bok")]
    assert text_file_pages(transcript(tmp_path, "blank.txt", " \u200b\t\n")) == []


def transcript(tmp_path: Path, name: str, content: str | bytes) -> Path:
    """``content`` written to ``tmp_path / name`` (text as UTF-8), a file to read turns from."""
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_read_turns_keeps_line_separators_inside_json_strings(tmp_path: Path) -> None:
    # json.dumps(ensure_ascii=False) leaves U+2028, U+2029 and U+0085 raw inside a string;
    # only "\n" ends a JSON line, so the line must not be cut at them.
    text = "one\u2028two\u2029three\x85four"
    path = transcript(tmp_path, "chat.jsonl",
                      json.dumps({"role": "user", "text": text}, ensure_ascii=False) + "\n"
                      + json.dumps({"role": "assistant", "text": "ok"}) + "\n")
    assert read_turns(path) == [TurnText("user", text), TurnText("assistant", "ok")]


def test_read_turns_takes_plain_text_that_starts_with_a_brace(tmp_path: Path) -> None:
    # Only a first line that is a JSON object makes a file that is not .jsonl JSON lines:
    # code or a pretty-printed JSON document is plain text, not a parse error.
    code = transcript(tmp_path, "main.c.txt", "{\n  int x = 42;\n}\n")
    assert read_turns(code) == [TurnText("user", "{\n  int x = 42;\n}")]
    sniffed = transcript(tmp_path, "chat.txt", '{"role": "user", "text": "hi"}\n')
    assert read_turns(sniffed) == [TurnText("user", "hi")]


def test_read_turns_takes_the_iso_timestamps_ingest_takes(tmp_path: Path) -> None:
    # A transcript written for `opticmem ingest` may give ts as ISO 8601 (UTC when it
    # has no offset); `eval --text-file` refused the whole file for it.
    path = transcript(tmp_path, "chat.jsonl",
                      '{"role": "user", "text": "hi", "ts": "1970-01-02T00:00"}\n'
                      '{"role": "assistant", "text": "yo", "ts": "1970-01-01T00:01:00Z"}\n'
                      '{"role": "user", "text": "ok", "ts": 5}\n')
    assert [t.ts for t in read_turns(path)] == [86400.0, 60.0, 5.0]
    bad = transcript(tmp_path, "bad.jsonl", '{"text": "hi", "ts": "yesterday"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1.*yesterday"):
        read_turns(bad)
    # A JSON integer past a float's range crashed `eval --text-file` with OverflowError.
    huge = transcript(tmp_path, "huge.jsonl", '{"text": "hi", "ts": 1%s}\n' % ("0" * 400))
    with pytest.raises(ValueError, match=r"huge\.jsonl:1.*out of range"):
        read_turns(huge)


def test_read_turns_skips_a_utf8_byte_order_mark(tmp_path: Path) -> None:
    # Windows tools start UTF-8 files with a BOM: it is the encoding's signature, not
    # text, so a JSON-lines file still parses and a transcript's first label is found.
    jsonl = transcript(tmp_path, "chat.jsonl",
                       codecs.BOM_UTF8 + b'{"role": "user", "text": "hi"}\n')
    assert read_turns(jsonl) == [TurnText("user", "hi")]
    labelled = transcript(tmp_path, "chat.txt", codecs.BOM_UTF8 + b"User: hi\nAssistant: hello\n")
    assert read_turns(labelled) == [TurnText("user", "hi"), TurnText("assistant", "hello")]
    plain = transcript(tmp_path, "notes.txt", codecs.BOM_UTF8 + b"line one\n")
    assert read_turns(plain) == [TurnText("user", "line one")]


# --------------------------------------------------------------------------- sources


def test_word_tokens() -> None:
    assert word_tokens("Ship getUserName to 서울에서 by ORD-123 now") == [
        "ship", "get", "user", "name", "to", "서울에서", "by", "now"]
    assert word_tokens("HTTP_STATUS x3 3fa9c0de") == ["http", "status"]


def test_missing_or_stale_sources_raise(tmp_path: Path) -> None:
    with pytest.raises(SynthDataError, match="cannot read"):
        read_sources("train", tmp_path)
    stale = tmp_path / "stale"
    shutil.copytree(FIXTURE, stale)
    meta = json.loads((stale / "meta.json").read_text(encoding="utf-8"))
    meta["templates"] = "0" * 16
    (stale / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(SynthDataError, match="other templates"):
        read_sources("train", stale)
    with pytest.raises(ValueError):
        load_sources(cast(Split, "test"), FIXTURE)


def test_a_split_file_holding_the_other_split_is_refused(tmp_path: Path) -> None:
    """``eval.json.gz`` copied over from ``train.json.gz`` used to be read as eval sources:
    held-out text drawn from what the codec trains on."""
    swapped = tmp_path / "swapped"
    shutil.copytree(FIXTURE, swapped)
    shutil.copyfile(FIXTURE / "train.json.gz", swapped / "eval.json.gz")
    with pytest.raises(SynthDataError, match="holds the 'train' split's sources, not 'eval'"):
        read_sources("eval", swapped)
    assert read_sources("train", swapped).split == "train"


def test_data_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(synth.DATA_ENV, str(tmp_path))
    assert synth.data_dir() == tmp_path
    monkeypatch.delenv(synth.DATA_ENV)
    assert synth.data_dir() == synth.DEFAULT_DATA_DIR


def test_fixture_is_small() -> None:
    size = sum(p.stat().st_size for p in FIXTURE.iterdir())
    assert size <= 300 * 1024


@pytest.mark.skipif(not (importlib.util.find_spec("faker") and importlib.util.find_spec(
    "wordfreq")), reason="building sources needs faker and wordfreq (CI has no wordfreq)")
def test_build_sources_in_process(tmp_path: Path) -> None:
    built = synth.build_sources(pool_size=150, code_size=40)
    assert not set(built["train"].modules) & set(built["eval"].modules)
    for kind in synth.POOL_KINDS:
        assert not set(built["train"].pools[kind]) & set(built["eval"].pools[kind])
    synth.write_sources(built, tmp_path)
    turns = generate_conversation(0, "train", data_dir=tmp_path)
    eval_only = set(built["eval"].en_words) - set(built["train"].en_words)
    assert len(eval_only) > 10_000
    for seed in range(40):
        for t in generate_conversation(seed, "train", data_dir=tmp_path):
            assert not set(word_tokens(t.text)) & eval_only
    assert turns == generate_conversation(0, "train", data_dir=tmp_path)


# --------------------------------------------------------------------------- demo data


def _demo_files() -> tuple[Path, Path]:
    data = Path(str(resources.files("opticmem").joinpath("data")))
    return data / "sample_conversation.jsonl", data / "sample_questions.json"


def test_sample_conversation_is_one_long_timed_session() -> None:
    conv, _ = _demo_files()
    assert 150 * 1024 <= conv.stat().st_size <= 400 * 1024
    rows = [json.loads(line) for line in conv.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 350
    assert {r["session"] for r in rows} == {"demo"}
    assert {r["role"] for r in rows} == {"user", "assistant"}
    ts = [r["ts"] for r in rows]
    assert all(isinstance(t, int) for t in ts) and ts == sorted(set(ts))
    assert ts[-1] - ts[0] > 21 * 86400, "spans weeks"
    assert sum(bool(HANGUL.search(r["text"])) for r in rows) >= 20, "Korean exchanges"
    assert any("```" in r["text"] for r in rows), "code snippets"


def test_sample_questions_point_at_early_answers() -> None:
    conv, questions = _demo_files()
    rows = [json.loads(line) for line in conv.read_text(encoding="utf-8").splitlines()]
    qs = json.loads(questions.read_text(encoding="utf-8"))
    assert 5 <= len(qs) <= 8
    for q in qs:
        turn = rows[q["turn_seq"]]["text"]
        assert q["question"].endswith("?")
        assert all(a in turn for a in q["answer_contains"]), q
        assert q["turn_seq"] < 0.4 * len(rows), "answers come early, so recall needs memory"


def test_sample_conversation_pages() -> None:
    conv, _ = _demo_files()
    pages = text_file_pages(conv)
    assert len(pages) > 30
    assert all(p.complete for p in pages[:-1])
    assert pages[0].lines[0].startswith("User: ")


def test_read_turns_refuses_json_nested_too_deeply(tmp_path: Path) -> None:
    # json.loads raises RecursionError for brackets nested past Python's limit: `eval
    # --text-file` crashed with a traceback (no JSON object under --json) instead of
    # naming the line, as it does for any other line that is not a turn.
    deep = "[" * 100_000 + "]" * 100_000
    path = transcript(tmp_path, "deep.jsonl", '{"text": "hi"}\n{"text": ' + deep + "}\n")
    with pytest.raises(ValueError, match=r"deep\.jsonl:2.*nested too deeply"):
        read_turns(path)


@pytest.mark.parametrize(("line", "what"), [
    ('{"text": null}', "text must be a string, got null"),
    ('{"text": 123}', "text must be a string, got 123"),
    ('{"text": ["hi"]}', r'text must be a string, got \["hi"\]'),
    ('{"role": null, "text": "hi"}', "role must be a string, got null"),
    ('{"role": 7, "text": "hi"}', "role must be a string, got 7"),
])
def test_read_turns_refuses_text_or_role_that_is_not_a_string(
    tmp_path: Path, line: str, what: str
) -> None:
    # str() turned {"text": null} into a page reading "User: None" (and 123 into "123"):
    # eval scored a codec on words the file never held. Ingest refuses them too.
    path = transcript(tmp_path, "chat.jsonl", '{"text": "ok"}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"chat\.jsonl:2: .*{what}"):
        read_turns(path)
