"""Small pure parts: the text counter, image prices, facts, policies, the planner, recall terms."""

from __future__ import annotations

import pytest

from opticmem import (
    AgeDecay,
    ApproxCounter,
    BudgetError,
    DeepSeekOCRCost,
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
from opticmem.facts import FactSpans, facts_line, page_facts
from opticmem.policy import OUT, decay_policy
from opticmem.recall import Doc, RecallIndex, split_passages, terms
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
    with pytest.raises(ValueError, match="negative"):
        text_counter(lambda s: -1).count("x")


def test_tokenizers_tokenizer_adapter() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    assert text_counter(tok).count("hello world again") == 3


# --------------------------------------------------------------------------- costs


def test_deepseek_prices_are_slots_or_nominal() -> None:
    assert [DeepSeekOCRCost().tokens(t.pixels, t.pixels) for t in Tier] == [421, 273, 111, 73]
    assert [DeepSeekOCRCost(nominal=True).tokens(t.pixels, t.pixels) for t in Tier] == [
        400, 256, 100, 64]


def test_tile_and_area_formulas() -> None:
    assert TileCost().tokens(1280, 1280) == 85 + 170 * 4
    assert TileCost().tokens(4096, 2048) == 85 + 170 * 6  # → 2048×1024 → 1536×768
    assert TileCost(tile_tokens=100, base_tokens=0).tokens(512, 512) == 100
    assert PixelAreaCost().tokens(3136, 3136) == -(-1568 * 1568 // 750)
    assert PixelAreaCost(divisor=1000).tokens(1000, 1000) == 1000


def test_cost_model_presets_and_errors() -> None:
    assert cost_model("openai").image_tokens("tiny") == 255
    assert cost_model("anthropic").image_tokens(Tier.LARGE) == 2185
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


def test_facts_line_and_limit() -> None:
    assert facts_line(()) == ""
    many = " ".join(f"T-{i}" for i in range(100))
    assert len(extract_facts(many.replace("T-", "ABC-"))) == 32


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
