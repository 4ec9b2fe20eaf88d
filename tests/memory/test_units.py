"""Small pure parts: the text counter, image prices, facts, policies, the planner, recall terms."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opticmem import (
    AgeDecay,
    ApproxCounter,
    BudgetError,
    ConfigurationError,
    DeepSeekOCRCost,
    OpticalMemory,
    PixelAreaCost,
    PressureDecay,
    RankDecay,
    Tier,
    TileCost,
    cost_model,
    extract_facts,
    message_tokens,
    text_counter,
)
from opticmem.budget import Mark, PageOption, plan
from opticmem.costs import png_size
from opticmem.facts import (
    CUE_WINDOW_CHARS,
    MAX_CUE_WORDS,
    FactSpans,
    fact_keywords,
    fact_kind,
    fact_spans,
    facts_line,
    page_cues,
    page_facts,
)
from opticmem.policy import OUT, decay_policy
from opticmem.recall import COMPOUND, Doc, RecallIndex, split_passages, terms
from opticmem.render import png_bytes, to_tier

# --------------------------------------------------------------------------- tokens


@pytest.mark.parametrize(("text", "lo", "hi"), [
    ("Let's plan Project Titan for March.", 7, 9),          # cl100k: 8
    ("The quick brown fox jumps over the lazy dog.", 9, 11),  # cl100k: 10
    ("Internationalization", 3, 5),
    ("1234567890", 3, 4),                                    # digits in threes
    ("서울 파트너와 회의", 8, 10),                            # ~1 per Hangul syllable
    ("中文字符", 4, 4),
    ("😀😀", 4, 4),
    ("", 0, 0),
])
def test_approx_counter_is_close_to_bpe(text: str, lo: int, hi: int) -> None:
    assert lo <= ApproxCounter().count(text) <= hi


def test_approx_counter_scales_and_caches() -> None:
    c = ApproxCounter()
    para = "We should keep the scope small and review the risks with the team. " * 50
    n = c.count(para)
    assert 3.6 <= len(para) / n <= 5.0  # ≈4 characters a token on English prose
    assert c.count(para) == n


def test_text_counter_adapters() -> None:
    class Tok:
        def encode(self, s: str) -> list[int]:
            return list(range(len(s.split())))

    assert text_counter(Tok()).count("a b c") == 3
    assert text_counter(len).count("abcd") == 4
    assert text_counter(None).name == "approx-bpe-v1"
    with pytest.raises(TypeError, match="cannot count tokens"):
        text_counter(3.5)
    # A name has .encode (str.encode), so it passed for a tokenizer and the memory failed
    # only at its first count, with "LookupError: unknown encoding: <the turn's text>".
    with pytest.raises(TypeError, match="a tokenizer's name is not a tokenizer"):
        text_counter("cl100k_base")
    with pytest.raises(TypeError, match="a tokenizer's name is not a tokenizer"):
        OpticalMemory(codec=None, text_counter="cl100k_base")
    with pytest.raises(ValueError, match="negative"):
        text_counter(lambda s: -1).count("x")


@pytest.mark.parametrize("returned", [2.7, 3.0, float("nan"), float("inf"), True, "5", None])
def test_a_counter_that_returns_no_whole_number_is_refused(returned: object) -> None:
    # int() of the callable's result truncated 2.7 to 2 (every text under-counted, so
    # contexts ran over their budget), took "5" and True, and failed on NaN or infinity
    # with a bare ValueError or OverflowError when the context was built
    with pytest.raises(ConfigurationError, match="whole number of tokens"):
        text_counter(lambda s: returned).count("x")
    mem = OpticalMemory(codec=None, text_counter=lambda s: returned)
    mem.add("s", "user", "hello")
    with pytest.raises(ConfigurationError, match="whole number of tokens"):
        mem.context("s")
    assert [t.text for t in mem.turns("s")] == ["hello"]  # the turn is kept
    import numpy as np

    assert text_counter(lambda s: np.int64(3)).count("x") == 3  # any integer type


def test_tokenizers_tokenizer_adapter() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    assert text_counter(tok).count("hello world again") == 3


def test_transformers_tokenizer_counts_the_text_without_its_special_tokens() -> None:
    # encode() of a transformers tokenizer adds BOS/EOS (or CLS/SEP) around every text:
    # each turn, caption and facts line was counted 2 tokens over, and "" as 2
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(
        {"hello": 0, "world": 1, "[UNK]": 2, "<s>": 3, "</s>": 4}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 3), ("</s>", 4)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                 unk_token="[UNK]")
    assert len(hf.encode("hello world")) == 4  # what the counter used to count
    assert text_counter(hf).count("hello world") == text_counter(tok).count("hello world") == 2
    assert text_counter(hf).count("") == 0


def test_tiktoken_encoding_counts_special_token_text_as_text() -> None:
    # tiktoken's encode() raises ValueError on text that spells a special token: a stored
    # turn quoting "<|endoftext|>" made every context() of its session fail
    tiktoken = pytest.importorskip("tiktoken")
    enc = tiktoken.Encoding(
        name="bytes", pat_str=r" ?\w+| ?[^\s\w]+|\s+",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={"<|endoftext|>": 256})
    text = "a <|endoftext|> b"
    assert text_counter(enc).count(text) == len(text.encode())  # one token a byte here
    mem = OpticalMemory(codec=None, text_counter=enc)
    mem.add("s", "user", f"the model printed {text}")
    assert mem.context("s").cost.turns > 0


# --------------------------------------------------------------------------- costs


def test_deepseek_prices_are_slots_or_nominal() -> None:
    assert [DeepSeekOCRCost().tokens(t.pixels, t.pixels) for t in Tier] == [421, 273, 111, 73]
    assert [DeepSeekOCRCost(nominal=True).tokens(t.pixels, t.pixels) for t in Tier] == [
        400, 256, 100, 64]


def test_tile_and_area_formulas() -> None:
    assert TileCost().tokens(1280, 1280) == 85 + 170 * 4
    assert TileCost().tokens(4096, 2048) == 85 + 170 * 6  # → 2048×1024 → 1536×768
    assert TileCost(tile_tokens=100, base_tokens=0).tokens(512, 512, detail="high") == 100
    assert PixelAreaCost(max_tokens=10**9).tokens(3136, 3136) == -(-1568 * 1568 // 750)
    assert PixelAreaCost(divisor=1000).tokens(1000, 1000) == 1000


def test_tile_formula_prices_small_images_at_low_detail() -> None:
    # OpenAI reads a detail "low" image at 512×512 for a flat 85 tokens, so a Tiny page
    # (512 px) loses nothing there; it was priced (and sent, by default) at high: 255.
    assert TileCost().detail(512, 512) == "low" and TileCost().tokens(512, 512) == 85
    assert TileCost().detail(512, 513) == "high" and TileCost().tokens(640, 640) == 765
    assert TileCost(low_detail_side=None).tokens(512, 512) == 255
    # a detail a message part names is what it is billed at
    assert TileCost().tokens(512, 512, detail="high") == 255
    assert TileCost().tokens(1280, 1280, detail="low") == 85
    assert TileCost().tokens(512, 512, detail="auto") == 85  # OpenAI picks: our choice


def test_area_formula_shrinks_images_past_about_1600_tokens() -> None:
    # Anthropic reads a square image at about 1092×1092 at most (~1,600 tokens): a
    # 1280-pixel page was priced 1280²/750 = 2185, far above what it is charged.
    assert PixelAreaCost().tokens(1280, 1280) == 1599  # shrunk to 1095×1095
    assert PixelAreaCost().tokens(3136, 3136) == 1599
    assert PixelAreaCost().tokens(1024, 1024) == 1399  # under the cap: unchanged
    assert 1550 <= PixelAreaCost().tokens(784, 1568) <= 1600  # a 1:2 image, at the cap
    assert all(PixelAreaCost().tokens(w, 4000 - w) <= 1600 for w in range(100, 3900, 97))


def test_cost_model_presets_and_errors() -> None:
    assert cost_model("openai").image_tokens("tiny") == 85  # at detail "low"
    assert cost_model("anthropic").image_tokens(Tier.LARGE) == 1599
    assert cost_model("deepseek-ocr", message_overhead=0).message_overhead == 0
    with pytest.raises(ValueError, match="presets"):
        cost_model("gpt-17")
    with pytest.raises(ValueError, match="message_overhead"):
        cost_model("openai", message_overhead=-1)


def test_message_tokens_prices_png_blocks_by_size() -> None:
    import base64

    from PIL import Image

    png = png_bytes(to_tier(Image.new("L", (1280, 1280), 255), Tier.SMALL))
    assert png_size(png) == (640, 640)
    b64 = base64.b64encode(png).decode()
    m = cost_model("deepseek-ocr")
    msgs = [{"role": "user", "content": [{"type": "text", "text": "hello"},
                                         {"type": "image", "base64": b64,
                                          "mime_type": "image/png"}]},
            {"role": "user", "content": [{"type": "image_url",
                                          "image_url": {"url": f"data:image/png;base64,{b64}"}}]}]
    assert message_tokens(msgs, m) == 3 + 1 + 111 + 3 + 111
    with pytest.raises(ValueError, match="cannot price"):
        message_tokens([{"role": "user", "content": [{"type": "audio"}]}], m)


# --------------------------------------------------------------------------- facts


def test_facts_catch_what_ocr_gets_wrong() -> None:
    text = ("Ship v0.9.1 on 2026-03-04 at 15:30; budget $48,250.00 (12.5% over). Ask "
            "mina.kim@example.com, see https://example.com/a?b=1. Commit 9f86d081884c, "
            "ticket ABC-123 / #42, call `make test`, file src/app/main.py, id user_id.")
    facts = extract_facts(text)
    for want in ("v0.9.1", "2026-03-04", "15:30", "$48,250.00", "12.5%",
                 "mina.kim@example.com", "https://example.com/a?b=1", "9f86d081884c",
                 "ABC-123", "#42", "`make test`", "src/app/main.py", "user_id"):
        assert want in facts, want
    assert "Ship" not in facts and "budget" not in facts


def test_page_facts_keep_straddling_facts_on_both_pages() -> None:
    text = "intro text https://example.com/very/long/path and more"
    spans = FactSpans(text)
    cut = text.index("long")
    assert page_facts([(spans, 0, cut)]) == page_facts([(spans, cut, len(text))]) == (
        "https://example.com/very/long/path",)
    assert page_facts([(spans, len(text) - 3, len(text))]) == ()


def test_a_one_letter_ticket_key_is_a_fact_whole() -> None:
    """``T-100`` was kept as a bare ``100`` (keys needed two letters), which cannot answer
    "which ticket?"."""
    assert extract_facts("ticket T-100 ships after ORD-12345") == ("T-100", "ORD-12345")


def test_terminal_escapes_are_no_part_of_a_fact() -> None:
    """A shell tool's coloured output gave ``31mE42`` for the code and ``1mhttps`` plus a
    URL cut at its scheme; each fact must read as the terminal showed it."""
    out = ("\x1b[31mE42\x1b[0m build 4411 failed at 2026-03-04 12:30, log "
           "\x1b[1;4mhttps://ci.example.com/b/4411\x1b[0m\x1b]0;ci\x07 by mina@x.io\x1bM")
    assert extract_facts(out) == (
        "E42", "4411", "2026-03-04 12:30", "https://ci.example.com/b/4411", "mina@x.io")
    assert extract_facts(out) == extract_facts(
        "E42 build 4411 failed at 2026-03-04 12:30, log https://ci.example.com/b/4411 by "
        "mina@x.io")


def test_numbers_and_ids_glued_to_cjk_text_are_facts() -> None:
    """Unsegmented text runs straight into its numbers (``가격은15000원``, ``金额为12345元``):
    its characters counted as word characters, so such numbers were no facts at all and a
    phone number came back as two bare pieces (``1234``, ``5678``)."""
    assert extract_facts("가격은15000원이고 전화는010-1234-5678입니다") == (
        "15000원", "010-1234-5678")
    assert extract_facts("金额为12345元，订单号A1234，截止2026-03-04。") == (
        "12345元", "A1234", "2026-03-04")
    assert extract_facts("予算は48,250円、チケットTITAN-142です") == ("48,250円", "TITAN-142")
    assert extract_facts("数字１２３４５") == ("１２３４５",)  # full-width digits too
    assert extract_facts("보고서.md 파일") == ("보고서.md",)  # a file's name may be Hangul
    assert fact_kind("010-1234-5678") == "phone number"


def test_numbers_ids_and_addresses_glued_to_thai_lao_khmer_or_myanmar_text_are_facts() -> None:
    """Thai, Lao, Khmer and Myanmar are written without spaces too, and their letters
    counted as word characters: ``ราคา15000บาท`` gave no fact, ``ตั๋วABC-123ครับ`` the bare
    ``123``, and a letter glued on either side went into an address or path
    (``อmina@x.io``, ``/etc/hostsท``) — facts that do not exist."""
    assert extract_facts("ราคา15000บาท โทร010-1234-5678ครับ") == ("15000", "010-1234-5678")
    assert extract_facts("ตั๋วABC-123ครับ") == ("ABC-123",)
    assert extract_facts("ติดต่อmina@x.io ไฟล์/etc/hostsที่ ดูhttps://x.io/aนะ") == (
        "mina@x.io", "/etc/hosts", "https://x.io/a")
    assert extract_facts("ລາຄາ250ກີບ, តម្លៃ99ដុល្លារ, ကုန်ဈေး15000ကျပ်") == (
        "250", "99", "15000")


def test_an_id_typed_in_full_width_characters_is_a_fact_whole_as_it_was_written() -> None:
    """Japanese and Chinese input methods type ids in full-width letters, digits and signs:
    ``ＡＢＣ－１２３`` came back as the bare number ``１２３`` (the letters and the ``－`` were
    no ASCII to the patterns), ``ｍｙ＿ｖａｒ`` as nothing. Found whole now, and kept as
    written (recall matches them with their ASCII forms anyway)."""
    assert extract_facts("チケットＡＢＣ－１２３、電話０１０-１２３４-５６７８、ｍｙ＿ｖａｒ、"
                         "＃４５を確認") == (
        "ＡＢＣ－１２３", "０１０-１２３４-５６７８", "ｍｙ＿ｖａｒ", "＃４５")
    assert extract_facts("ticket ＴＩＴＡＮ－１４２, down －５％") == (
        "ＴＩＴＡＮ－１４２", "－５％")
    assert [fact_kind(f) for f in ("ＡＢＣ－１２３", "ｍｙ＿ｖａｒ", "＃４５")] == [
        "ticket issue key", "identifier name", "ticket issue"]
    # full-width punctuation still ends a URL, as it ends a sentence
    assert extract_facts("见https://x.io/a，然后ｖ２。") == ("https://x.io/a", "ｖ２")


_WIDEN = {chr(c - 0xFEE0): chr(c) for c in (*range(0xFF21, 0xFF3B), *range(0xFF41, 0xFF5B))} | {
    "1": "１", "2": "２", "0": "０", "-": "－", "_": "＿", "#": "＃"}


@given(st.text(alphabet="ABCXYZabcxyz0129-_#.@/: ", max_size=40),
       st.sets(st.sampled_from(sorted(_WIDEN))))
def test_full_width_text_has_the_facts_of_its_ascii_form(text: str, wide: set[str]) -> None:
    """Typing some of a text's letters, digits and signs full-width changes none of the
    facts found in it, only how each is written."""
    widened = "".join(_WIDEN[c] if c in wide else c for c in text)
    assert [(s, e) for s, e, _ in fact_spans(widened)] == [
        (s, e) for s, e, _ in fact_spans(text)]
    assert [f for _, _, f in fact_spans(widened)] == [
        widened[s:e] for s, e, _ in fact_spans(text)]


@pytest.mark.parametrize("text", [
    "Büro3 und Café24", "Code 4LÈ, Zürich", "mail josé@x.io on 2026-03-04",
    "Tiếng Việt2 v1.2.3", "وَرَقَمُهُ١٢٣ و ١٢٣", "✅\ufe0f2026-03-04",
])
def test_decomposed_text_has_the_facts_of_its_precomposed_form(text: str) -> None:
    """A combining mark is no word character to ``re``: in decomposed text (NFD, as macOS
    writes it) a ``\b`` fell after each accent, so ``Büro3`` had the fact ``ro3``,
    ``Café24`` the fact ``24`` and ``4LÈ`` the fact ``4LE``, none of them written there,
    and ``josé@x.io`` was no fact at all. Facts stay as written (decomposed)."""
    nfd = unicodedata.normalize("NFD", text)
    facts = extract_facts(nfd)
    assert tuple(unicodedata.normalize("NFC", f) for f in facts) == extract_facts(text)
    assert all(f in nfd and fact_kind(f) for f in facts)


def test_a_file_path_address_or_url_glued_to_cjk_text_is_a_fact_without_it() -> None:
    """A Hangul particle after a file name made it no fact at all (``config.yaml을``), and
    after a path, e-mail address or URL it was kept as part of it (``/etc/hosts를``,
    ``mina@x.io로``): a file and an address that do not exist. CJK words glued before one
    (``打开config.yaml``, ``연락처는mina@x.io``) were taken in the same way."""
    assert extract_facts("config.yaml을 고치고 src/app.py를 열어 /etc/hosts를 보고 "
                         "mina@x.io로 보내고 https://x.io/a에서 확인.") == (
        "config.yaml", "src/app.py", "/etc/hosts", "mina@x.io", "https://x.io/a")
    assert extract_facts("config.yamlを編集、打开config.yaml文件，연락처는mina@x.io로.") == (
        "config.yaml", "mina@x.io")
    # CJK after a "/" or "." is the fact's own
    assert extract_facts("보고서.md를 https://ko.wikipedia.org/wiki/서울 에서") == (
        "보고서.md", "https://ko.wikipedia.org/wiki/서울")
    assert FactSpans("파일config.yaml을").spans == [(2, 13, "config.yaml")]


def test_a_document_image_or_archive_is_a_file_fact() -> None:
    """Only code and configuration types made a file: ``report.pdf`` or ``q1.xlsx`` was no
    fact, and ``report_v2.pdf는`` came back as the identifier ``report_v2``."""
    assert extract_facts("send report_v2.pdf, q1.xlsx, deck.pptx and logo.png "
                         "(index.html, backup.tar.gz)") == (
        "report_v2.pdf", "q1.xlsx", "deck.pptx", "logo.png", "index.html", "backup.tar.gz")
    assert extract_facts("report_v2.pdf는 어디?") == ("report_v2.pdf",)
    assert extract_facts("docs/spec.pdf") == ("docs/spec.pdf",)
    assert fact_kind("report_v2.pdf") == "file"


def test_a_number_with_arabic_separators_or_a_full_width_percent_is_a_fact_whole() -> None:
    """``١٬٢٣٤٫٥٦`` (1,234.56 with the Arabic thousands and decimal separators) came back
    as ``٢٣٤`` and ``٥٦``, ``٣٫٥٪`` was no fact, and ``٥٠٪`` or ``５０％`` lost the sign that
    makes them a percentage."""
    assert extract_facts("المبلغ ١٬٢٣٤٫٥٦ ريال بنسبة ٣٫٥٪ و ٥٠٪") == ("١٬٢٣٤٫٥٦", "٣٫٥٪", "٥٠٪")
    assert extract_facts("５０％オフ") == ("５０％",)
    assert [fact_kind(f) for f in ("١٬٢٣٤٫٥٦", "٣٫٥٪", "５０％")] == [
        "number", "percent", "percent"]


@pytest.mark.parametrize(("text", "url"), [
    ("(see https://en.wikipedia.org/wiki/Foo_(bar))", "https://en.wikipedia.org/wiki/Foo_(bar)"),
    ("[Foo](https://en.wikipedia.org/wiki/Foo_(bar)).", "https://en.wikipedia.org/wiki/Foo_(bar)"),
    ("see https://x.io/a_(b).", "https://x.io/a_(b)"),
    ("(see https://x.io/a).", "https://x.io/a"),
    ("(https://x.io/f(a)(b))", "https://x.io/f(a)(b)"),
])
def test_a_url_keeps_its_own_parentheses_only(text: str, url: str) -> None:
    """A URL with parentheses of its own, in parentheses, kept the closing one around it
    too (``…/Foo_(bar))``): not the address that was written."""
    assert extract_facts(text) == (url,)


@pytest.mark.parametrize("text", [
    "الرابط https://x.io/a\u200f للتفاصيل", "הקישור \u202bhttps://x.io/a\u202c כאן",
    "see https://x.io/a\u200bthen", "ดูที่ https://x.io/a\u200bก่อน", "https://x.io/a\ufeff",
    "https://x.io/a\x00garbage", "https://x.io/a\u2069 \u2067",
])
def test_a_url_stops_at_an_invisible_format_or_control_character(text: str) -> None:
    """A URL ran on to the next space: the right-to-left mark an editor puts after a URL
    in Arabic or Hebrew text was part of it (a fact that is no URL, and matches none
    typed), and after a zero-width space (a word break in Thai or a web page) so was the
    next word."""
    assert extract_facts(text) == ("https://x.io/a",)


def test_a_url_stops_at_cjk_punctuation() -> None:
    """Chinese and Japanese text runs on after a URL with no space: the URL kept the
    ``。``, ``，然后`` or ``」を参照`` after it, an address that does not exist."""
    assert extract_facts("见https://x.io/a。然后https://x.io/b，然后「https://x.io/c」を参照、"
                         "（www.x.io/d?q=1）") == (
        "https://x.io/a", "https://x.io/b", "https://x.io/c", "www.x.io/d?q=1")
    assert extract_facts("https://ko.wikipedia.org/wiki/서울") == (
        "https://ko.wikipedia.org/wiki/서울",)  # CJK letters in a URL stay


def test_an_iso_week_date_is_a_fact_whole() -> None:
    """``2026-W09`` came back as a number ``2026`` and an "id code" ``W09``, and
    ``2026-W09-3`` as ``2026`` and a "ticket key" ``W09-3``: no date to find."""
    assert extract_facts("sprint 2026-W09, demo 2026-W09-3; 2026-W10에 출시") == (
        "2026-W09", "2026-W09-3", "2026-W10")
    assert fact_kind("2026-W09-3") == "date"


def test_a_month_name_ending_a_sentence_is_no_date_with_the_next_number() -> None:
    """"…by mid-April. 4. Budget…" (a numbered list) gave the date ``April. 4``, shown in
    the bundled sample's facts line: a dot follows only an abbreviated month name."""
    assert extract_facts("wants it by mid-April. 4. Budget I'll get; in May. 2. Next") == ()
    assert extract_facts("due Apr. 4, then Sept. 12th, 2026 and May 2") == (
        "Apr. 4", "Sept. 12th, 2026", "May 2")


def test_a_date_with_slashes_or_dots_is_a_date_not_a_path_version_or_phone() -> None:
    """``2026/03/04`` was found as a "path", ``2026.03.04`` and ``04.03.2026`` as a
    "version" and Korean ``2026. 3. 4.`` as a "phone number": a question for the date
    did not find them by their kind."""
    facts = extract_facts("due 2026/03/04, 2026.03.04, 4.3.2026 and 2026. 3. 4. (2026/3/31)")
    assert facts == ("2026/03/04", "2026.03.04", "4.3.2026", "2026. 3. 4", "2026/3/31")
    assert {fact_kind(f) for f in facts} == {"date"}
    # a path, a version and no month stay what they were
    assert [fact_kind(f) for f in extract_facts(
        "logs/2026/03/04/x.log 2026.03.04.1 2026.3.4 v2026.03.04 2026/13/01")] == [
        "path", "version", "version", "version", "path"]


def test_a_cjk_date_or_time_is_a_fact_whole() -> None:
    """``2026年3月4日`` and ``2026년 3월 4일`` came back as a bare number ``2026``, and
    ``3月4日``, ``3월 4일`` or ``오후 3시 30분`` as no fact (``30`` at most): the day lost."""
    assert extract_facts("마감은 2026년 3월 4일 오후 3시 30분까지, 리뷰는 3월 10일, "
                         "출시는 2026년 4월에") == (
        "2026년 3월 4일 오후 3시 30분", "3월 10일", "2026년 4월")
    assert extract_facts("截止2026年3月4日下午3时。会议3月4号，15時30分に集合") == (
        "2026年3月4日下午3时", "3月4号", "15時30分")
    assert extract_facts("회의는 오후 3시에, 2026年3月4日15時30分45秒") == (
        "오후 3시", "2026年3月4日15時30分45秒")
    # a count of hours is no time, and a year alone stays a number
    assert extract_facts("3월 4일 3시간 걸림, 3時間, 2026년") == ("3월 4일", "2026")
    assert [fact_kind(f) for f in ("2026年3月4日", "3월 4일", "오후 3시 30분")] == [
        "date", "date", "time"]


def test_a_timestamp_keeps_its_fraction_of_a_second_and_zone() -> None:
    """``…T12:30:00.123+09:00`` was cut after the seconds, and its zone came back as a time
    of its own (``09:00``); a log line's ``12:30:45,120`` lost its milliseconds."""
    assert extract_facts("at 2026-03-04T12:30:00.123456+09:00 and 2026-03-04 08:15:02,120 "
                         "and 10:30:45.5 and 2026-03-04T12:30:00Z") == (
        "2026-03-04T12:30:00.123456+09:00", "2026-03-04 08:15:02,120", "10:30:45.5",
        "2026-03-04T12:30:00Z")
    assert fact_kind("2026-03-04T12:30:00.123+09:00") == "date"
    assert fact_kind("10:30:45.5") == "time"


def test_a_path_is_a_fact_whole() -> None:
    """An absolute path lost its leading ``/`` (``etc/nginx/nginx.conf`` is another path),
    ``src/app.py`` came back as ``app.py``, and of a Windows path only its file name."""
    assert extract_facts("edit /etc/nginx/nginx.conf (and /etc/hosts), then src/app.py; "
                         r"copy C:\Users\mina\q1.xlsx to \\fs01\team\q1.xlsx.") == (
        "/etc/nginx/nginx.conf", "/etc/hosts", "src/app.py", r"C:\Users\mina\q1.xlsx",
        r"\\fs01\team\q1.xlsx")
    assert extract_facts("and/or at 60 km/h, yes/no, /help") == ("60",)
    assert [fact_kind(f) for f in ("/etc/hosts", r"C:\Users\mina", "src/app.py")] == [
        "path", "path", "path"]


def test_an_ip_address_is_a_fact_whole() -> None:
    """An IPv6 address came back as its hex groups, each a fact of its own (``2001``,
    ``db8``…), crowding the sidecar; an IPv4 address lost its port and was a "version"."""
    assert extract_facts("api at 10.0.0.1:8080 (net 10.0.0.0/8), dns [2001:db8::1]:53, "
                         "fe80::1ff:fe23:4567:890a and ::1; full 2001:0db8:85a3:0000:0000:8a2e:"
                         "0370:7334.") == (
        "10.0.0.1:8080", "10.0.0.0/8", "[2001:db8::1]:53", "fe80::1ff:fe23:4567:890a", "::1",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334")
    assert {fact_kind(f) for f in ("10.0.0.1:8080", "[::1]:53", "fe80::1")} == {"ip address"}
    # a slice, a C++ name and a time are no addresses
    assert extract_facts("x[::2], y[1::2], std::vector, abc::def at 12:30:45") == ("12:30:45",)
    assert extract_facts("서버는10.0.0.1:8080이고") == ("10.0.0.1:8080",)


def test_a_number_grouped_by_spaces_is_a_fact_whole() -> None:
    """French, Russian or Swedish ``1 234,56`` came back as ``234,56`` — another amount."""
    assert extract_facts("Total : 1 234,56 €, budget 48\u202f250\u00a0000 €, 3 000,5 kg") == (
        "1 234,56 €", "48\u202f250\u00a0000 €", "3 000,5")  # with their currency
    assert extract_facts("between 10 and 200 of 64 128") == ("10", "200", "64", "128")
    assert fact_kind("1 234,56") == "number"


def test_an_amount_with_its_currency_after_it_or_as_a_code_is_money() -> None:
    """``1,200 EUR``, ``EUR 1,200``, ``48,250円`` and ``15,000원`` came back as bare numbers
    (the currency lost, and no "amount money" kind to find them by), and ``€1 234,56`` as
    ``€1`` plus ``234,56`` — two wrong amounts."""
    text = ("EUR 1,200 or 1,200 EUR; 1 234,56 € and €1 234,56, 1.234,56 €; 48,250円, "
            "₩15,000 = 15,000원; USD1,200 and 2,000 USD.")
    facts = ("EUR 1,200", "1,200 EUR", "1 234,56 €", "€1 234,56", "1.234,56 €", "48,250円",
             "₩15,000", "15,000원", "USD1,200", "2,000 USD")
    assert extract_facts(text) == facts
    assert {fact_kind(f) for f in facts} == {"amount money"}
    assert extract_facts("EUR 1,200 or 1,200 EUR, 2 000 € and 3\u00a0500,50\u00a0€") == (
        "EUR 1,200", "1,200 EUR", "2 000 €", "3\u00a0500,50\u00a0€")  # text with no CJK
    # a number before other capitals, or before a $ (a shell variable), is still a number
    assert extract_facts("10 GPU, 64 CPU cores, 25 EURO-pallets, echo 42 $HOME") == (
        "10", "64", "25", "42")


def test_a_yuan_or_yen_amount_and_its_cjk_multiplier_are_one_amount() -> None:
    """``1,200元`` and ``￥1,200`` came back as the bare number ``1,200``, ``300万元`` as
    ``300`` (three hundred, not three million yuan), ``1.5억 원`` as ``1.5``, and ``5万円``
    or ``3억원`` were no fact at all."""
    text = ("价格是1,200元，合计￥1,200，预算300万元、共计 1200 元。予算5万円、￥300万。"
            "3억원, 1.5억 원, 3천만 원")
    facts = ("1,200元", "￥1,200", "300万元", "1200 元", "5万円", "￥300万", "3억원", "1.5억 원",
             "3천만 원")
    assert extract_facts(text) == facts
    assert {fact_kind(f) for f in facts} == {"amount money"}
    assert extract_facts("10万人, 2026년") == ("10", "2026")  # no currency: a number


def test_a_dollar_or_yen_amount_keeps_its_country() -> None:
    """``HK$500``, ``NT$300`` or ``A$30`` came back as ``$500``, ``$300``, ``$30``: US
    dollars to whoever reads the sidecar, a different amount."""
    text = "HK$500, NT$300, A$30, C$5, US$1,200, R$50, S$10, NZ$12.50, JP¥1,200 and -HK$5"
    facts = ("HK$500", "NT$300", "A$30", "C$5", "US$1,200", "R$50", "S$10", "NZ$12.50",
             "JP¥1,200", "-HK$5")
    assert extract_facts(text) == facts
    assert {fact_kind(f) for f in facts} == {"amount money"}
    assert extract_facts("홍콩HK$500이다, ABC$5") == ("HK$500", "$5")


def test_an_amounts_multiplier_is_a_whole_word() -> None:
    """The multiplier after an amount (k, M, bn, million) was taken from the next word's
    first letter: "$5 bananas" gave "$5 b" and "$5 billion" "$5 b", a different amount."""
    for text, fact in (("$5 bananas", "$5"), ("$5 billion", "$5 billion"),
                       ("$3bn deal", "$3bn"), ("costs $2.5M total", "$2.5M"),
                       ("€2k/month", "€2k"), ("$5 million.", "$5 million")):
        assert extract_facts(text) == (fact,), text


def test_a_negative_number_or_amount_keeps_its_minus_sign() -> None:
    """``-$5``, ``−12.5`` and "the balance is -12.5" came back as ``$5`` and ``12.5``: the
    opposite amount. A range and a ticket key keep their hyphen as before."""
    assert extract_facts("refund -$5; the balance is -12.5 (was −12.5), at −4,200 EUR") == (
        "-$5", "-12.5", "−12.5", "−4,200 EUR")
    assert [fact_kind(f) for f in ("-$5", "-12.5", "−12.5", "−4,200 EUR")] == [
        "amount money", "number", "number", "amount money"]
    assert extract_facts("pages 10-20, ABC-123, x-15, 1e-12, --25 and 2026-03-04") == (
        "10", "20", "ABC-123", "15", "1e-12", "25", "2026-03-04")
    assert extract_facts("잔액은 -12.5이고 차액은−15,000원") == ("-12.5", "−15,000원")


def test_a_number_in_scientific_notation_is_a_fact_whole() -> None:
    """``6.02e23`` came back as ``6.02`` and ``1e-10`` as ``10``: other numbers altogether,
    and ``2e5`` as an "id code"."""
    assert extract_facts("N = 6.02e23, eps 1e-10, lr=-2.5E-3, x 1.5e+3; 2e5개, ~1e5 steps") == (
        "6.02e23", "1e-10", "-2.5E-3", "1.5e+3", "2e5", "1e5")
    assert [fact_kind(f) for f in ("6.02e23", "1e-10", "-2.5E-3")] == ["number"] * 3
    assert extract_facts("commit 1234e56, 1e10x") == ("1234e56", "1e10x")  # a hash, an id


def test_an_amount_with_its_minus_sign_after_the_currency_is_one_negative_amount() -> None:
    """``$-5`` and ``€-5`` were no fact at all, and ``$-1,000.50`` came back as the bare
    number ``-1,000.50``: the currency lost."""
    assert extract_facts("refund $-5, fee €-5, balance $-1,000.50 and EUR -1,200") == (
        "$-5", "€-5", "$-1,000.50", "EUR -1,200")
    assert fact_kind("$-1,000.50") == "amount money"
    assert extract_facts("from $5-$10") == ("$5", "$10")  # a range stays two amounts


def test_a_version_keeps_its_build_metadata() -> None:
    """``1.2.3+build.7`` came back cut to ``1.2.3`` (another build), and
    ``v2.0.0-rc.1+sha.5114f85`` as ``v2.0.0-rc.1`` plus a "hash" ``5114f85``."""
    assert extract_facts("ship 1.2.3+build.7, tag v2.0.0-rc.1+sha.5114f85. "
                         "Python 3.10.1+ only; 1.0.0+build.7을 배포") == (
        "1.2.3+build.7", "v2.0.0-rc.1+sha.5114f85", "3.10.1", "1.0.0+build.7")
    assert fact_kind("v2.0.0-rc.1+sha.5114f85") == "version"


def test_facts_line_and_limit() -> None:
    assert facts_line(()) == ""
    many = " ".join(f"T-{i}" for i in range(100))
    assert len(extract_facts(many.replace("T-", "ABC-"))) == 32


@pytest.mark.parametrize(("fact", "kind"), [
    ("https://x.io/a", "url link"), ("mina@x.io", "e-mail address"), ("`make test`", "code"),
    ("2026-03-04", "date"), ("March 4, 2026", "date"), ("15:30", "time"),
    ("$48,250.00", "amount money"), ("₩1,054,000", "amount money"), ("v0.9.1", "version"),
    ("9f86d081884c", "hash"), ("src/app/main.py", "path"), ("main.py", "file"),
    ("#42", "ticket issue"), ("ABC-123", "ticket issue key"), ("T-100", "ticket issue key"),
    ("user_id", "identifier name"),
    ("12.5%", "percent"), ("+82 2 3456 7812", "phone number"), ("1,234", "number"),
    ("hello", ""), ("", ""),
])
def test_fact_kind_names_what_a_fact_is(fact: str, kind: str) -> None:
    assert fact_kind(fact) == kind


def test_fact_keywords_are_the_cues_and_each_kind_once() -> None:
    facts = extract_facts("Call +82 2 3456 7812 or 010-1234-5678, or mail mina@x.io.")
    assert facts == ("+82 2 3456 7812", "010-1234-5678", "mina@x.io")  # no run-on numbers
    assert fact_keywords(facts, ("Call", "", "mail")) == "Call mail phone number e-mail address"
    assert fact_keywords((), ()) == ""


def test_a_phone_number_with_its_area_code_in_parentheses_or_local_is_a_fact_whole() -> None:
    """``(02) 3456-7812`` came back as ``02) 3456-7812`` (a stray parenthesis, the
    opening one lost) and a 7-digit local ``555-0199`` as two bare numbers."""
    assert extract_facts("tel (02) 3456-7812. or (415) 555-0199, local 555-0199; "
                         "+1 (415) 555-0199, +44 20 7946 0958, +82 10-1234-5678, "
                         "(010-1234-5678)") == (
        "(02) 3456-7812", "(415) 555-0199", "555-0199", "+1 (415) 555-0199",
        "+44 20 7946 0958", "+82 10-1234-5678", "010-1234-5678")
    assert extract_facts("전화 555-0199로, 사무실 (02)3456-7812번") == (
        "555-0199", "(02)3456-7812")
    assert {fact_kind(f) for f in ("(02) 3456-7812", "555-0199")} == {"phone number"}
    assert extract_facts("pages 10-20, T-555-0199") == ("10", "20", "T-555", "0199")


def cues(text: str) -> dict[str, list[str]]:
    spans = FactSpans(text)
    return {f: spans.cue(i) for i, (_, _, f) in enumerate(spans.spans)}


@pytest.mark.parametrize(("text", "want"), [
    # the nearest content words each side, within the sentence; stopwords are left out
    ("Noted: TITAN-142 is the payment duplicate bug (webhook retries), assigned to Priya. "
     "Lunch at noon.", ["Noted", "payment", "duplicate", "bug", "webhook"]),
    ("TITAN-7 blocks the release\nunrelated words here", ["blocks", "release"]),  # line start
    ("first line words\nThe release is blocked by TITAN-7\nnext line",  # line end
     ["release", "blocked"]),
    ("Budget approved. Ticket TITAN-7 opened! Other stuff.", ["Ticket", "opened"]),
    ("What's her e-mail? It's mina@x.io, says Jae-won.", ["says", "Jae-won"]),  # compounds whole
    # Hangul: words with their particles; a particle glued to the fact is one letter, dropped
    ("한빛데이터 사무실은 서울 강남구 테헤란로 231에 있습니다. 다음 회의",
     ["사무실은", "서울", "강남구", "테헤란로", "있습니다"]),
    # unsegmented CJK: the characters nearest the fact
    ("项目经理说我们的总预算是¥48,000用于负载测试和部署。下一个", ["们的总预算是", "用于负载测试"]),
    # a Latin word cut by the search window is not a word
    ("abcdefghij" * 20 + " TITAN-9 done", ["done"]),
])
def test_cue_is_the_content_words_around_a_fact(text: str, want: list[str]) -> None:
    [cue] = cues(text).values()
    assert cue == want


def test_cue_leaves_out_other_facts_and_bare_numbers() -> None:
    assert cues("Release v1.2.3 ships 2026-03-04 with 3 fixes") == {
        "v1.2.3": ["Release", "ships", "fixes"], "2026-03-04": ["Release", "ships", "fixes"]}


def test_page_cues_merge_mentions_dedupe_and_stay_bounded() -> None:
    text = ("Mina: mina@x.io. Write to MINA@x.io about contracts. Billing questions go to "
            "mina@x.io too, says the finance team lead.")
    segs = [(FactSpans(text), 0, len(text))]
    facts = page_facts(segs)
    assert facts == ("mina@x.io", "MINA@x.io")
    assert page_cues(segs, facts) == (
        "Mina Billing questions go too says finance team", "Write about contracts")
    assert page_cues(segs, ()) == () and page_cues([(FactSpans("no facts"), 0, 8)], ()) == ()
    # only the part of a turn drawn on the page lends cues
    assert page_cues([(FactSpans(text), 0, 16)], ("mina@x.io",)) == ("Mina",)


def test_cues_of_a_long_turn_are_bounded() -> None:
    filler = "lorem ipsum dolor sit amet " * 4_000  # one 108,000-character line
    text = filler + "Ticket TITAN-9 tracks the login crash " + filler + " ".join(
        f"ticket TITAN-{i} fixes crash number {i}" for i in range(10, 5_000))
    spans = FactSpans(text)
    segs = [(spans, 0, len(text))]
    facts = page_facts(segs)
    cue_list = page_cues(segs, facts)
    assert len(cue_list) == len(facts) == 32
    assert cue_list[0] == "dolor sit amet Ticket tracks login crash lorem"
    assert all(len(c.split()) <= MAX_CUE_WORDS for c in cue_list)
    s, e, _ = spans.spans[0]
    assert all(w in text[s - CUE_WINDOW_CHARS : e + CUE_WINDOW_CHARS] for w in cue_list[0].split())


# --------------------------------------------------------------------------- policies


def test_rank_policy_defaults() -> None:
    levels = [RankDecay().level(r, 0.0) for r in range(18)]
    assert levels == [0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, OUT, OUT]
    assert RankDecay(large=0, base=1, small=0, tiny=1).level(0, 0.0) == 1
    assert RankDecay().max_pages == 16


def test_age_and_pressure_policies() -> None:
    p = AgeDecay(large=10, base=20, small=30, tiny=40, max_pages=5)
    assert [p.level(0, a) for a in (0, 9.9, 10, 25, 35, 40, -5)] == [0, 0, 1, 2, 3, OUT, 0]
    assert p.level(5, 0) == OUT
    with pytest.raises(ValueError, match="non-decreasing"):
        AgeDecay(large=5, base=1)
    assert [PressureDecay(3).level(r, 1e9) for r in range(4)] == [0, 0, 0, OUT]
    assert decay_policy("age").key.startswith("age:")
    with pytest.raises(ValueError, match="unknown decay policy"):
        decay_policy("random")


# --------------------------------------------------------------------------- planner

COSTS = (421, 273, 111, 73)


def opts(*levels: int) -> list[PageOption]:
    return [PageOption(i, lv, COSTS) for i, lv in enumerate(levels)]


def test_plan_keeps_policy_when_it_fits() -> None:
    p = plan(10_000, opts(3, 2, 0), [50, 60], page_header=10)
    assert p.levels == (3, 2, 0) and p.demotions == 0
    assert p.cost == 73 + 111 + 421 + 110 + 10


def test_plan_demotes_oldest_first_then_drops_turns() -> None:
    p = plan(700, opts(0, 0), [100], page_header=10)
    assert p.levels == (2, 0) and p.cost == 111 + 421 + 100 + 10
    p = plan(300, opts(0, 0), [100, 150], page_header=10)
    assert p.levels == (OUT, OUT) and p.first_turn == 0 and p.cost == 250
    p = plan(200, opts(0), [100, 150], page_header=10)
    assert p.levels == (OUT,) and p.first_turn == 1 and p.cost == 150
    with pytest.raises(BudgetError, match="newest turn, which costs 150"):
        plan(120, opts(0), [100, 150])


def test_plan_charges_the_lead_note_only_with_no_page_and_for_the_first_kept_turn() -> None:
    # turns [user 100, assistant 60, user 40]: a note of 20 is due when the reply opens
    lead = [0, 20, 0]
    p = plan(10_000, opts(0), [100, 60, 40], page_header=10, lead_costs=lead)
    assert p.levels == (0,) and p.cost == 421 + 200 + 10  # a page opens it: no note
    p = plan(210, opts(0), [100, 60, 40], page_header=10, lead_costs=lead)
    assert p.levels == (OUT,) and p.first_turn == 0 and p.cost == 200
    p = plan(120, opts(0), [100, 60, 40], page_header=10, lead_costs=lead)
    assert p.first_turn == 1 and p.cost == 60 + 40 + 20  # the note fits exactly
    p = plan(119, opts(0), [100, 60, 40], page_header=10, lead_costs=lead)
    assert p.first_turn == 2 and p.cost == 40  # it does not: the reply goes too
    # the newest turn is a reply: it needs its note, or the turn before it if cheaper
    with pytest.raises(BudgetError, match="newest turn, which costs 25") as err:
        plan(24, [], [50, 5], lead_costs=[0, 20])
    assert err.value.needed == 25
    with pytest.raises(BudgetError, match="newest turn, which costs 20") as err:
        plan(19, [], [15, 5], lead_costs=[0, 20])
    assert err.value.needed == 20 and plan(20, [], [15, 5], lead_costs=[0, 20]).first_turn == 0
    with pytest.raises(ValueError, match="lead_costs has 1 entries for 2 turns"):
        plan(100, [], [1, 2], lead_costs=[0])


def test_plan_makes_levels_monotone_and_respects_marks() -> None:
    assert plan(10_000, opts(0, 3, 1), [1]).levels == (3, 3, 1)
    p = plan(10_000, opts(0, 0, 0), [1], mark=Mark(1, 2))
    assert p.levels == (OUT, 2, 0)
    assert p.mark == Mark(1, 2)


def test_mark_order() -> None:
    assert Mark(2, 0) > Mark(1, 3) > Mark(1, 1)
    assert Mark(3, 1).apply(2, 0) == OUT and Mark(3, 1).apply(3, 0) == 1
    assert Mark(3, 1).apply(4, 0) == 0


# --------------------------------------------------------------------------- recall index


def test_terms_and_passages() -> None:
    assert "abc-123" in terms("see ABC-123") and "milestone" in terms("Milestones")
    assert terms("what is the plan", drop_stopwords=True) == ["plan"]
    assert split_passages("\n".join(str(i) for i in range(10)), lines=4) == [
        "0\n1\n2\n3", "2\n3\n4\n5", "4\n5\n6\n7", "6\n7\n8\n9"]
    assert split_passages("") == []


def test_bounded_fact_patterns_find_what_the_unbounded_ones_found() -> None:
    """The repetitions bounded to keep long runs linear (e-mail local part ≤ 64, a path's
    or file's first name, a percent's digits and a scientific number's parts ≤ 200) change
    nothing on real text: the bundled demo conversation's facts are those of the unbounded
    patterns."""
    import json
    from importlib import resources

    from opticmem import facts as facts_module

    unbounded = re.compile(facts_module._FACT.pattern.replace(r"[\w.+-]{1,64}@", r"[\w.+-]+@")
                           .replace(r"[\w.-]{0,200}(?:", r"[\w.-]*(?:")
                           .replace(r"[\w-]{1,200}\.(?:py", r"[\w-]+\.(?:py")
                           .replace(r"[\w.-]{0,200}\.(?:py", r"[\w.-]*\.(?:py")  # a dotfile
                           .replace(r"\d[\d,\u066c]{0,200}(?:", r"\d[\d,\u066c]*(?:")
                           .replace(r"\d{1,200}(?:\.\d{1,200})?[eE][+-]?\d{1,200}",
                                    r"\d+(?:\.\d+)?[eE][+-]?\d+"))
    assert not any(b in unbounded.pattern for b in ("{1,64}", "{0,200}", "{1,200}"))
    data = resources.files("opticmem").joinpath("data", "sample_conversation.jsonl").read_text()
    text = "\n".join(json.loads(line)["text"] for line in data.splitlines() if line.strip())
    found = [m.group() for m in facts_module._FACT.finditer(text)]
    assert len(found) > 100
    assert found == [m.group() for m in unbounded.finditer(text)]


def test_a_long_digit_run_no_pattern_takes_is_extracted_in_linear_time() -> None:
    """The phone pattern was tried again at each digit of a run it failed on: a ``.`` and
    20,000 digits ending in a letter took 6 s, a megabyte of them hours."""
    import time

    for text in ("." + "1" * 20_000 + "é", "전화." + "1" * 20_000 + "_"):
        start = time.perf_counter()
        assert extract_facts(text) == ()
        assert time.perf_counter() - start < 1.0
    assert extract_facts("tel.010-1234-5678, 1.234567890") == ("010-1234-5678", "1.234567890")


@given(st.text(alphabet="ab9_-./:@# \n서울é", max_size=40))
def test_compound_terms_start_only_where_a_word_does(text: str) -> None:
    """The look-behind that keeps long joiner-free runs linear changes no match: the same
    compounds as the plain pattern (which tries every character of a run)."""
    plain = re.compile(r"[^\W_]+(?:[-./:@#_][^\W_]+)+")
    assert [m.group() for m in COMPOUND.finditer(text)] == [
        m.group() for m in plain.finditer(text)]


def test_decomposed_and_precomposed_text_match() -> None:
    """A query typed with combining accents or Hangul jamo (NFD) used to split its words
    at each combining mark and find nothing indexed in NFC, and the other way round."""
    nfc, nfd = "Café Zürich 서울", unicodedata.normalize("NFD", "Café Zürich 서울")
    assert nfc != nfd and terms(nfc) == terms(nfd)
    idx = RecallIndex()
    idx.set_page(0, [Doc(0, "recollection", nfc, 0.9, Tier.LARGE)])
    idx.set_page(1, [Doc(1, "recollection", "lunch menu and coffee", 0.9, Tier.LARGE)])
    assert [d.page_no for d, _ in idx.search(unicodedata.normalize("NFD", "zürich"), 2)] == [0]
    assert [d.page_no for d, _ in idx.search(unicodedata.normalize("NFD", "서울"), 2)] == [0]


@pytest.mark.parametrize(("written", "typed"), [
    ("Straße", "STRASSE"), ("STRASSE", "straße"), ("ΟΔΟΣ", "οδος"), ("οδος", "ΟΔΟΣ"),
    ("İstanbul", "istanbul"), ("İSTANBUL", "Istanbul"),
    ("İ\u064bx", "i\u064b\u0307x"),  # a mark of a lower class after the İ: folded, then ordered
])
def test_a_word_is_found_in_any_case_a_user_types_it(written: str, typed: str) -> None:
    """Terms were lowercased: ``ß`` stayed apart from its capital's ``SS``, a final ``ς``
    from its capital ``Σ`` (lowercased ``σ``), and ``İ`` became ``i`` and a combining
    dot, so a search for "istanbul" never found a page that said "İstanbul"."""
    assert terms(written) == terms(typed)
    idx = RecallIndex()
    idx.set_page(0, [Doc(0, "recollection", f"we met in {written} at noon", 0.9, Tier.LARGE)])
    idx.set_page(1, [Doc(1, "recollection", "lunch menu and coffee", 0.9, Tier.LARGE)])
    assert [d.page_no for d, _ in idx.search(typed, 2)] == [0]


def test_bm25_ranks_and_replaces() -> None:
    idx = RecallIndex()
    idx.set_page(0, [Doc(0, "recollection", "titan launch moved to march", 0.5, Tier.SMALL)])
    idx.set_page(1, [Doc(1, "facts", "Exact facts: TITAN-42 · 2026-03-04", 1.0, None)])
    idx.set_page(2, [Doc(2, "recollection", "lunch menu and coffee", 0.9, Tier.LARGE)])
    hits = idx.search("When is the Titan launch?", 3)
    assert [d.page_no for d, _ in hits][:2] == [0, 1] and hits[0][1] > hits[1][1]
    assert idx.search("TITAN-42", 1)[0][0].page_no == 1
    idx.set_page(0, [])
    assert [d.page_no for d, _ in idx.search("launch", 3)] == []
    assert idx.search("", 3) == [] and idx.search("zzz", 3) == []


def test_passages_are_normalised_by_the_length_of_their_own_source() -> None:
    """Facts passages are lists, several times as long as a few recollected lines; how
    long they all are must not change how they rank and score against recollections."""

    def search(facts_per_page: int) -> list[tuple[int, str, float]]:
        idx = RecallIndex()
        for p in range(4):
            facts = " · ".join(f"X{p}-{i}" for i in range(facts_per_page))
            cue = "refund glitch" if p == 1 else "lunch menu"
            rec = "refund handled" if p == 2 else "rainy day"
            idx.set_page(p, [Doc(p, "facts", f"Exact facts: {facts}", 1.0, None, keywords=cue),
                             Doc(p, "recollection", rec, 0.5, Tier.SMALL)])
        return [(d.page_no, d.source, round(s, 9)) for d, s in idx.search("refund glitch", 2)]

    hits = search(1)
    assert [h[:2] for h in hits] == [(1, "facts"), (2, "recollection")]
    assert search(40) == hits


def test_keywords_find_a_passage_they_are_not_shown_in() -> None:
    idx = RecallIndex()
    facts = Doc(0, "facts", "Exact facts: TITAN-142", 1.0, None, keywords="payment duplicate bug")
    idx.set_page(0, [facts])
    idx.set_page(1, [Doc(1, "recollection", "lunch menu and coffee", 0.9, Tier.LARGE)])
    [(doc, _)] = idx.search("Which ticket tracks the payment bug?", 3)
    assert doc.text == "Exact facts: TITAN-142" and doc.index_text.endswith("payment duplicate bug")
    assert idx.search("TITAN-142", 1)[0][0] == facts


def test_the_blanks_of_a_terminal_escape_join_no_facts() -> None:
    """Escapes were blanked to spaces, which a phone number's digits may be spaced by: a
    coloured status code and the size after it (``200\\x1b[0m 1024``) made one fact
    ``200     1024`` that the terminal never showed, where the plain text has two."""
    coloured = "GET /api \x1b[32m200\x1b[0m 1024 bytes, code \x1b[31m404\x1b[0m 12 ms"
    assert extract_facts(coloured) == ("200", "1024", "404", "12")
    assert extract_facts(coloured) == extract_facts("GET /api 200 1024 bytes, code 404 12 ms")


def test_a_limit_of_no_facts_gives_none() -> None:
    """``limit`` was checked only after a fact was taken, so ``limit=0`` (or a negative
    one) gave the first fact: one more than "at most ``limit``"."""
    text = "ship v1.2.3 on 2026-03-04"
    assert extract_facts(text, limit=0) == ()
    assert extract_facts(text, limit=-1) == ()
    assert page_facts([(FactSpans(text), 0, len(text))], limit=0) == ()
    assert extract_facts(text, limit=1) == ("v1.2.3",)


def test_a_search_for_fewer_than_one_passage_finds_none() -> None:
    """``k`` cut the ranking as a slice: ``k=-1`` gave every matching passage but the
    worst, not "the ``k`` best"."""
    idx = RecallIndex()
    for p in range(3):
        idx.set_page(p, [Doc(p, "recollection", f"titan launch {p}", 0.9, Tier.LARGE)])
    assert len(idx.search("titan", 3)) == 3
    assert idx.search("titan", 0) == [] and idx.search("titan", -1) == []


def test_words_keep_their_combining_marks() -> None:
    """Combining marks are no word characters to ``re``, so a Devanagari, Thai or
    vocalised Arabic word was cut at each vowel sign or virama into single letters
    (``दुनिया`` was ``द न य``): a query found any page with those letters in it."""
    assert terms("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]
    thai = terms("ภาษาไทย ที่นี่")  # unsegmented: each run, and its character bigrams
    assert [t for t in thai if len(t) > 2] == ["ภาษาไทย", "ที่นี่"] and "ที่" not in thai
    assert terms("मुंबई-पुणे") == ["मुंबई-पुणे", "मुंबई", "पुणे"]
    idx = RecallIndex()
    idx.set_page(0, [Doc(0, "recollection", "दुनिया भर में", 0.9, Tier.LARGE)])
    idx.set_page(1, [Doc(1, "recollection", "दिन यहाँ नया", 0.9, Tier.LARGE)])
    assert [d.page_no for d, _ in idx.search("दुनिया", 2)] == [0]


def test_a_long_run_of_combining_marks_is_read_in_one_pass() -> None:
    """A word pattern that let a run of marks split many ways tried every split when a
    compound failed to match: "a" and 22 marks took 0.2 s, each mark more doubled it,
    and the fuzzed recall of the bad-input suite hung the CI run."""
    marks = "\u0301" * 60  # after q and v: NFKC composes no letter from them
    one, two = "qq" + marks, "vv" + marks
    assert terms(f"{one} b") == [one, "qq", "b"]  # each word, then as typed without accents
    assert terms(f"{one}-{two}") == [f"{one}-{two}", "qq-vv", one, "qq", two, "vv"]
    idx = RecallIndex()
    idx.set_page(0, [Doc(0, "recollection", two, 0.9, Tier.LARGE)])
    assert [d.page_no for d, _ in idx.search(two, 1)] == [0]


def test_recall_terms_ignore_characters_that_show_nothing_inside_a_word() -> None:
    """A soft hyphen or zero-width character cut a word into two terms: a search for
    ``Donaudampf`` missed a page holding ``Donau\\u00addampf``, and Persian typed with and
    without its zero-width non-joiner did not match. (A zero-width space marks a word
    boundary in Thai or Khmer text: the pieces stay terms as well.)"""
    for shown, typed in (("Donau\u00addampfschiff", "Donaudampfschiff"),
                         ("می\u200cخواهم", "میخواهم"), ("\ufeffinvoice", "invoice"),
                         ("re\u2060use", "reuse")):
        assert set(terms(typed)) <= set(terms(shown))  # the pieces are terms too
        idx = RecallIndex()
        idx.set_page(0, [Doc(0, "recollection", f"about {shown} today", 0.9, Tier.LARGE)])
        idx.set_page(1, [Doc(1, "recollection", "lunch menu and coffee", 0.9, Tier.LARGE)])
        assert [d.page_no for d, _ in idx.search(typed, 2)] == [0], shown


def test_an_e_mail_local_part_over_64_characters_is_no_address() -> None:
    """The pattern took the last 64 characters of a longer local part as an address that
    does not exist (stuck to the rest of its word); a local part is at most 64 (RFC 5321).
    Unsegmented text glued before an address is still no part of it."""
    assert extract_facts("x" * 70 + "@example.com and more") == ()
    assert extract_facts("a" * 64 + "@x.io") == ("a" * 64 + "@x.io",)
    assert extract_facts("我" * 80 + "mina@x.io") == ("mina@x.io",)


def _found(pages: list[str], query: str) -> list[int]:
    idx = RecallIndex()
    for p, text in enumerate(pages):
        idx.set_page(p, [Doc(p, "recollection", text, 0.9, Tier.LARGE)])
    return [d.page_no for d, _ in idx.search(query, len(pages))]


@pytest.mark.parametrize(("query", "want"), [
    ("C++", [0]), ("c++", [0]), ("C#", [1]), ("F#", [2]), ("what about C++17?", [0]),
    ("C", [0, 1, 3]),  # the bare letter is still a word of each page
    ("notepad", [4]), ("Notepad++", [4]),
])
def test_a_letter_with_plus_plus_or_sharp_is_a_term_of_its_own(query: str, want: list[int]) -> None:
    """``C++``, ``C#`` and ``F#`` were the terms ``c`` and ``f``: a search for "C++" found
    every page with a "c" on it, and the C# page as well as the C++ one."""
    pages = ["we ported it to C++17 last year", "the C# service is slow",
             "F# pipelines are neat", "vitamin c and coffee", "Notepad++ crashed"]
    assert sorted(_found(pages, query)) == want


@pytest.mark.parametrize("page", ['צה"ל', "צה״ל", "צהל"])
@pytest.mark.parametrize("query", ['צה"ל', "צה״ל", "צהל", "צָה״ל"])
def test_a_hebrew_acronym_is_found_with_or_without_its_gershayim(page: str, query: str) -> None:
    """``צה״ל`` (with a gershayim, or the ``"`` typed for one) was the terms ``צה`` and ``ל``:
    ``צהל``, as the acronym is also written, never found it, and a search for ``צה"ל``
    matched any page with a lone ``ל`` on it."""
    assert _found([f"הודעת {page} היום", "ל מ ה ב", "lunch menu"], query) == [0]


@pytest.mark.parametrize(("written", "typed"), [
    ("café", "cafe"), ("Müller", "Muller"), ("señor", "senor"), ("Tiếng Việt", "tieng viet"),
    ("Łódź", "Lodz"), ("Ærøskøbing", "aeroskobing"), ("DİYARBAKIR", "diyarbakır"),
    ("λόγος", "λογος"), ("Ελληνικά", "ελληνικα"), ("ёлка", "елка"), ("молоко́", "молоко"),
    ("שָׁלוֹם", "שלום"), ("مَرْحَبًا", "مرحبا"), ("مرحـــبا", "مرحبا"), ("هٰذا", "هذا"),
    ("طلب ١٢٣", "123"), ("क्रम ४५६", "456"), ("q\u0303", "q"),
    ("gdzieś", "gdzies"), ("jakiś", "jakis"),  # the fold ends in a plural-looking "s"
    # Arabic spelling variants: the alef's hamza, madda and wasla, taa marbuta, alef maqsura
    ("أحمد", "احمد"), ("إسلام", "اسلام"), ("آمن", "امن"), ("ٱلله", "الله"), ("مدرسة", "مدرسه"),
    ("على", "علي"), ("مَدْرَسَةٌ", "مدرسه"),
    # German umlauts spelt out (ß needs nothing: case folding makes it ss)
    ("Müller", "Mueller"), ("Köln", "Koeln"), ("Bär", "Baer"), ("Düsseldorf", "duesseldorf"),
    ("Straße", "Strasse"), ("Grüße", "gruesse"),
])
def test_a_word_is_found_typed_with_or_without_its_accents(written: str, typed: str) -> None:
    """Accents were part of a term: "cafe" never found a page that said "café" (nor
    "Muller" "Müller", "שלום" a pointed "שָׁלוֹם", "123" an Arabic "١٢٣", "احمد" an "أحمد"),
    and a page read back without its accents was not found by a question typed with them."""
    for page, query in ((written, typed), (typed, written)):
        assert _found([f"we met {page} today", "lunch menu and coffee"], query) == [0], page


def test_a_word_as_typed_ranks_above_its_unaccented_or_accented_twin() -> None:
    """A page that has a word as the query spells it ranks at least as high as one that has
    it only with other accents; the folded form counts once, not beside the exact one."""
    for query, exact, other in (("café", "the café opens", "the cafe opens"),
                                ("cafe", "the cafe opens", "the café opens"),
                                ("Müller", "ask Müller", "ask Muller"),
                                ("Müller", "ask Müller", "ask Mueller"),
                                ("Mueller", "ask Mueller", "ask Müller"),
                                ("أحمد", "قابلت أحمد", "قابلت احمد"),
                                ("احمد", "قابلت احمد", "قابلت أحمد"),
                                ("مدرسة", "في مدرسة", "في مدرسه")):
        assert _found([other, exact], query) == [1, 0]
        assert _found([exact, other], query) == [0, 1]
    # a word typed with its accents counts once: as much as typed without them on a page
    # where both are found alike (the two terms summed gave it twice the weight)
    idx = RecallIndex()
    idx.set_page(0, [Doc(0, "recollection", "café", 0.9, Tier.LARGE)])
    idx.set_page(1, [Doc(1, "recollection", "lunch menu", 0.9, Tier.LARGE)])
    assert idx.search("café", 1)[0][1] == pytest.approx(idx.search("cafe", 1)[0][1])


def test_terms_fold_only_what_a_user_types_without() -> None:
    """Hangul and the marks that are letters (Devanagari vowel signs, Thai tone marks, the
    breve of Cyrillic й) are never stripped: a term is folded, not changed."""
    assert terms("서울 한국어") == terms(unicodedata.normalize("NFD", "서울 한국어"))
    assert "서울" in terms("서울") and not any("\u1100" <= c <= "\u11ff" for t in terms(
        unicodedata.normalize("NFD", "서울")) for c in t)
    assert terms("नमस्ते") == ["नमस्ते"] and terms("йод") == ["йод"]
    assert terms("Señor", drop_stopwords=True) == ["señor", "senor"]
    assert terms("thé", drop_stopwords=True) == ["thé"]  # no query word folds to "the"


@pytest.mark.parametrize(("page", "query"), [
    ("party 🎉 time", "🎉"), ("party🎉time", "🎉"), ("thanks 👍🏽", "👍🏽"), ("thanks 👍🏽", "👍"),
    ("family 👨\u200d👩\u200d👧 photo", "👨\u200d👩\u200d👧"), ("trip to 🇰🇷", "🇰🇷"),
    ("love ❤️", "❤"), ("love ❤", "❤️"), ("press #️⃣ then 1️⃣", "#️⃣"), ("press 1️⃣", "1⃣"),
    ("🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f rugby",
     "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"),
])
def test_an_emoji_is_a_term(page: str, query: str) -> None:
    """Emoji were no terms: a search for "🎉" found nothing even on a page that had it.
    A flag is its pair of letters, a ZWJ sequence is whole, a skin tone is also found by
    its bare emoji, and a variation selector makes no difference."""
    assert _found([page, "lunch menu and coffee 🍕"], query) == [0]


def test_emoji_are_not_confused_with_each_other() -> None:
    assert _found(["🇰🇷 trip", "🇺🇸 trip"], "🇰🇷") == [0]
    assert _found(["🍕 lunch", "🎉 party"], "🎉") == [1]
    assert terms("🇺🇸🇰🇷") == ["🇺🇸", "🇰🇷"] and terms("🇺") == []


@pytest.mark.parametrize(("text", "want"), [
    ("see .config/a/b", (".config/a/b",)), ("see .config/a/b.", (".config/a/b",)),
    ("edit .env now.", (".env",)), ("edit .env.local, then", (".env.local",)),
    ("cat .eslintrc.json", (".eslintrc.json",)),
    ("the .zshrc and .gitignore", (".zshrc", ".gitignore")),
    ("see .github/workflows/ci.yml", (".github/workflows/ci.yml",)),
    ("~/.ssh/id_rsa", ("~/.ssh/id_rsa",)), ("./a and ../b", ("./a", "../b")),
    # a sentence's full stop is no dot of a fact, nor is .NET a file
    ("Done.config/a/b", ("Done.config/a/b",)), ("He left.env was set", ()), ("the end.", ()),
    ("I like .NET/C# a lot", ()), ("see config/a/b.", ("config/a/b",)),
])
def test_a_dotfile_keeps_its_dot(text: str, want: tuple[str, ...]) -> None:
    """``see .config/a/b`` had the path ``config/a/b`` (another folder than the dotfile one)
    and ``.env`` no fact at all: a path or file whose name starts with a dot at the start of
    a word keeps it."""
    assert extract_facts(text) == want
    assert all(fact_kind(f) in ("path", "file") for f in want)


@pytest.mark.parametrize(("text", "want"), [
    ("voirhttps://x.io/a", ("https://x.io/a",)),  # a word glued before the scheme
    ("see:https://x.io/a", ("https://x.io/a",)),
    ("order42https://x.io/a", ("order42", "https://x.io/a")),  # was the id "order42https"
    ("foo_barhttps://x.io", ("foo_bar", "https://x.io")),
    ("주문42https://x.io", ("42", "https://x.io")),
    ("mail:bob@x.io", ("bob@x.io",)),
    # a www glued to a word starts a URL as a glued scheme does
    ("voirwww.x.io", ("www.x.io",)), ("x42www.x.io/a", ("x42", "www.x.io/a")),
    ("abc123www.x.io", ("abc123", "www.x.io")), ("foo_barWWW.x.io", ("foo_bar", "WWW.x.io")),
    ("wwww.x.io", ()),  # no www in it
    ("files in /var/www. ok", ("/var/www",)), ("x42www. ok", ("x42www",)),  # no host after
    # no way to know where a local part starts: the glued word is taken into it
    ("Contactbob@x.io", ("Contactbob@x.io",)),
])
def test_a_word_glued_before_a_url_is_no_part_of_it(text: str, want: tuple[str, ...]) -> None:
    """A scheme glued to the end of a fact-shaped word was taken into that fact
    (``order42https``) and the URL after it was lost."""
    assert extract_facts(text) == want


@pytest.mark.parametrize(("text", "url"), [
    ("Https://x.io/a", "Https://x.io/a"), ("HTTPS://X.IO/A", "HTTPS://X.IO/A"),
    ("WWW.x.io/a", "WWW.x.io/a"),  # a phone capitalises a sentence's first letter
    ("sftp://host/p", "sftp://host/p"), ("tftp://1.2.3.4/boot", "tftp://1.2.3.4/boot"),
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("db at postgresql://u:p@db.x.io:5432/app.", "postgresql://u:p@db.x.io:5432/app"),
    ("s3://bucket/key/f.csv", "s3://bucket/key/f.csv"), ("file:///etc/hosts", "file:///etc/hosts"),
    ("链接sftp://x.io/a", "sftp://x.io/a"),
])
def test_a_url_of_any_scheme_in_any_case_is_a_fact_whole(text: str, url: str) -> None:
    """Only lower-case ``http``, ``https`` and ``ftp`` started a URL: ``Https://x.io`` was
    none, ``sftp://host`` was ``ftp://host``, and a connection string gave the "e-mail
    address" ``p@db.x.io`` of its password and host."""
    assert extract_facts(text) == (url,)
    assert fact_kind(url) == "url link"


@pytest.mark.parametrize("text", [
    "«https://x.io/a»", "“https://x.io/a”", "„https://x.io/a“", "‘https://x.io/a’",
    "see https://x.io/a…", "متصل https://x.io/a، شكرا", "देखें https://x.io/a।",
    "اطلب https://x.io/a؟", "— https://x.io/a —",
])
def test_typographic_quotes_and_other_scripts_punctuation_end_a_url(text: str) -> None:
    """Typographic quotes, an ellipsis, and the comma, question mark or full stop of
    Arabic or Devanagari were taken into the URL before them."""
    assert extract_facts(text) == ("https://x.io/a",)


def test_no_drive_letter_is_a_url_scheme() -> None:
    assert [f for f in extract_facts("C://Users/a/b") if "://" in f] == []


@pytest.mark.parametrize(("text", "want"), [
    ("שלח ל-bob@x.io", ("bob@x.io",)), ("ערכתי את ה-config.yaml", ("config.yaml",)),
    ("ב-/etc/hosts", ("/etc/hosts",)), ("ב-src/app.py", ("src/app.py",)),
    ("נפגשים ב-3/4/2026", ("3/4/2026",)), ("מה-2026/03/04", ("2026/03/04",)),
    ("דוח-שנתי.pdf", ("דוח-שנתי.pdf",)),  # a hyphen before Hebrew letters joins a name
])
def test_a_hebrew_prefix_joined_by_a_hyphen_is_no_part_of_a_fact(
        text: str, want: tuple[str, ...]) -> None:
    """Hebrew joins its one-letter prefixes (in, to, the, from…) to a Latin word or a
    number by a hyphen: "to bob@x.io" was the address ``ל-bob@x.io``, "on 3/4/2026" the
    path ``ב-3/4/2026``."""
    assert extract_facts(text) == want


@pytest.mark.parametrize(("page", "query"), [
    ("we run Windows™ 11", "windows"), ("Acme℠ support", "Acme"),
    ("call ℡0312345678", "0312345678"), ("plan Ⓐ or Ⓑ", "plan"), ("0🄫", "0"),
])
def test_a_symbol_nfkc_makes_letters_is_a_word_of_its_own(page: str, query: str) -> None:
    """NFKC makes ``™`` the letters ``TM``, glued to the word before it: ``Windows™`` was
    the one term ``windowstm``, never found by "Windows"."""
    assert _found([page, "lunch menu and coffee"], query) == [0]
    assert _found([page, "lunch menu and coffee"], page) == [0]


def test_a_file_or_path_name_starts_with_a_letter_or_digit() -> None:
    """At the word boundary after ``$0``, the file pattern took ``-.xml`` and the path
    pattern ``-/a/b``: facts of no kind, with the sign that ended the amount."""
    assert extract_facts("$0-.xml") == ("$0",)
    assert extract_facts("$0-/a/b") == ("$0", "/a/b")
    assert extract_facts("see a-b.py and _x.py in src/app.py") == ("a-b.py", "_x.py", "src/app.py")


def test_no_fact_starts_at_a_combining_mark() -> None:
    """Marks on a letter or digit are matched as a letter, so an address's local part
    could start at the marks right after a number that ended at their digit: ``0٫٠֑@0.0``
    had the "address" ``֑@0.0``, which is of no kind alone."""
    assert extract_facts("0\u066b\u0660\u0591@0.0") == ("0\u066b\u0660",)
    marked = ("x\u0301@x.io", "\u05e9\u05b8@x.io")  # marks inside an address stay in it
    assert extract_facts(" and ".join(marked)) == marked
