"""OpticalTokenCounter: per-tier, per-consumer image prices, usable with trim_messages."""

from __future__ import annotations

import base64
import io

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    convert_to_messages,
)
from langchain_core.messages.utils import count_tokens_approximately, trim_messages
from PIL import Image

from opticmem import ConfigurationError, InvalidTurnError, OpticalMemory, Tier
from opticmem.integrations import OpticalTokenCounter, count_tokens
from opticmem.integrations.langchain_messages import context_messages
from tests.integrations.fakes import image_tiers, user_text

PRESETS = ["deepseek-ocr", "deepseek-ocr-nominal", "openai", "anthropic"]


def _memory(preset: str) -> OpticalMemory:
    mem = OpticalMemory(codec=None, budget_tokens=6000, verbatim_turns=4, cost_model=preset)
    for i in range(60):
        mem.add("s", "user" if i % 2 == 0 else "assistant", user_text(i))
    return mem


def _png_b64(side: int) -> str:
    buf = io.BytesIO()
    Image.new("L", (side, side), 255).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _image_message(tier: Tier) -> HumanMessage:
    return HumanMessage(content=[{"type": "image", "base64": _png_b64(tier.pixels),
                                  "mime_type": "image/png"}])


@pytest.mark.parametrize("preset", PRESETS)
def test_matches_the_memorys_own_context_cost(preset: str) -> None:
    mem = _memory(preset)
    ctx = mem.context("s")
    messages = context_messages(ctx.messages())
    if preset in ("deepseek-ocr", "deepseek-ocr-nominal"):
        assert len(image_tiers(messages)) >= 2  # the savings gate kept images here
    assert OpticalTokenCounter(mem)(messages) == int(ctx.cost)
    assert count_tokens(messages, preset) == int(ctx.cost)


@pytest.mark.parametrize(("preset", "prices"), [
    ("deepseek-ocr", {"tiny": 73, "small": 111, "base": 273, "large": 421}),
    ("deepseek-ocr-nominal", {"tiny": 64, "small": 100, "base": 256, "large": 400}),
    ("openai", {"tiny": 85, "small": 765, "base": 765, "large": 765}),  # Tiny: detail low
    ("anthropic", {"tiny": 350, "small": 547, "base": 1399, "large": 1599}),
])
def test_prices_each_tier_by_the_consumers_formula(preset: str, prices: dict[str, int]) -> None:
    counter = OpticalTokenCounter(preset)
    overhead = counter.cost_model.message_overhead
    for tier in Tier:
        msg = _image_message(tier)
        assert counter([msg]) == prices[tier.value] + overhead
        assert counter([msg]) == counter.cost_model.image_tokens(tier) + overhead
        # LangChain's approximate counter charges a flat 85 whatever the tier or reader.
        assert count_tokens_approximately([msg]) == 85 + count_tokens_approximately(
            [HumanMessage(content=[])])
        assert counter([msg]) != count_tokens_approximately([msg])


def test_trim_messages_with_the_counter_keeps_within_budget() -> None:
    mem = _memory("deepseek-ocr")
    history = context_messages(mem.context("s").messages())
    messages: list[BaseMessage] = [SystemMessage("Be brief."), *history,
                                   HumanMessage("And what about ORD-1059?")]
    counter = OpticalTokenCounter(mem)
    total = counter(messages)
    limit = total - 300
    kept = trim_messages(messages, max_tokens=limit, token_counter=counter, strategy="last",
                         include_system=True, start_on="human")
    assert counter(kept) <= limit < total
    assert kept[0].content == "Be brief." and kept[-1].content == "And what about ORD-1059?"
    # LangChain's flat 85 per image under-prices these pages: it keeps more than fits.
    approx = trim_messages(messages, max_tokens=limit, token_counter=count_tokens_approximately,
                           strategy="last", include_system=True, start_on="human")
    assert counter(approx) > limit


def test_other_images_tool_calls_and_single_messages() -> None:
    counter = OpticalTokenCounter("openai", unknown_image_tokens=1000)
    jpeg = io.BytesIO()
    Image.new("RGB", (1024, 512), "white").save(jpeg, format="JPEG")
    b64 = base64.b64encode(jpeg.getvalue()).decode()
    by_size = HumanMessage(content=[{"type": "image", "base64": b64, "mime_type": "image/jpeg"}])
    assert counter(by_size) == counter.image_tokens(1024, 512) + 3 == 85 + 2 * 170 + 3
    data_url = HumanMessage(content=[{"type": "image_url",
                                      "image_url": {"url": f"data:image/jpeg;base64,{b64}"}}])
    assert counter(data_url) == counter(by_size)
    remote = HumanMessage(content=[{"type": "image", "url": "https://example.com/a.png"}])
    assert counter(remote) == 1000 + 3
    call = AIMessage(content="", tool_calls=[{"name": "recall", "args": {"query": "Titan"},
                                              "id": "c1", "type": "tool_call"}])
    assert counter(call) > counter(AIMessage(content="")) + 5
    assert counter([{"role": "user", "content": "hello"}]) == counter(HumanMessage("hello"))
    # A bare string is one human message, not five one-character ones.
    assert counter("hello") == counter(["hello"]) == counter(HumanMessage("hello"))
    assert OpticalTokenCounter("deepseek-ocr").unknown_image_tokens == 421



def test_invalid_tool_calls_are_priced_like_valid_ones() -> None:
    # An AIMessage whose tool-call arguments did not parse holds them in
    # invalid_tool_calls (not in its content blocks); they are sent back to the provider
    # all the same, but were priced as an empty message.
    counter = OpticalTokenCounter()
    args = '{"city": "Seoul", "days": 7, "units": "metric", "detail": "hourly forecast'
    valid = AIMessage("", tool_calls=[{"name": "weather", "args": {"raw": args}, "id": "c9",
                                       "type": "tool_call"}])
    invalid = AIMessage("", invalid_tool_calls=[{"name": "weather", "args": args, "id": "c9",
                                                 "error": "truncated",
                                                 "type": "invalid_tool_call"}])
    assert counter(invalid) > counter(AIMessage("")) + 20
    assert abs(counter(invalid) - counter(valid)) <= 5

def test_base64_with_whitespace_is_priced_like_the_plain_form() -> None:
    """Base64 that decodes — a leading newline, lines wrapped at 76 characters — prices as
    its plain form, on the PNG header path and the Pillow path alike."""
    counter = OpticalTokenCounter("openai")
    for fmt, size in (("PNG", (1024, 512)), ("JPEG", (700, 300))):
        buf = io.BytesIO()
        Image.new("RGB", size, "white").save(buf, format=fmt)
        plain = base64.b64encode(buf.getvalue()).decode()
        wrapped = base64.encodebytes(buf.getvalue()).decode()  # a newline every 76 chars

        def msg(b64: str, fmt: str = fmt) -> HumanMessage:
            return HumanMessage(content=[{"type": "image", "base64": b64,
                                          "mime_type": f"image/{fmt.lower()}"}])

        want = counter(msg(plain))
        assert want == counter.image_tokens(*size) + 3
        for b64 in ("\n" + plain, "  " + wrapped, "\r\n".join(wrapped.split("\n"))):
            assert counter(msg(b64)) == want, (fmt, b64[:10])


def test_bad_images_raise_value_error() -> None:
    counter = OpticalTokenCounter()
    not_b64 = HumanMessage(content=[{"type": "image", "base64": "%%%not base64%%%",
                                     "mime_type": "image/png"}])
    with pytest.raises(ValueError, match="base64"):
        counter(not_b64)
    not_b64_jpeg = HumanMessage(content=[{"type": "image", "base64": "/9j/4A",
                                          "mime_type": "image/jpeg"}])
    with pytest.raises(ValueError, match="base64"):
        counter(not_b64_jpeg)
    with pytest.raises(ValueError, match="unknown_image_tokens"):
        OpticalTokenCounter(unknown_image_tokens=-1)


HEIC = base64.b64encode(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
                        + bytes(64)).decode()
SVG = base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>').decode()


@pytest.mark.parametrize(("b64", "mime"), [(HEIC, "image/heic"), (SVG, "image/svg+xml")],
                         ids=["heic", "svg"])
def test_an_image_pillow_cannot_read_is_priced_as_one_of_unknown_size(b64: str,
                                                                      mime: str) -> None:
    # Gemini takes HEIC photos; the counter raised "cannot read the size of an image
    # block" for them, and the middleware, which prices every model call, failed the run
    message = HumanMessage(content=[{"type": "text", "text": "What is this?"},
                                    {"type": "image", "base64": b64, "mime_type": mime}])
    text_only = HumanMessage(content=[{"type": "text", "text": "What is this?"}])
    for unknown in (0, 300):
        counter = OpticalTokenCounter("openai", unknown_image_tokens=unknown)
        assert counter([message]) == counter([text_only]) + unknown


def test_prices_an_openai_image_part_at_the_detail_it_names() -> None:
    # ChatOpenAI sends an OpenAI ``image_url`` part as it is, detail included (LangChain
    # keeps it in the standard block's ``extras``): a Tiny-sized image sent at "high" is
    # billed 255, a Large one at "low" 85 — whatever the formula would pick.
    counter = OpticalTokenCounter("openai")
    overhead = counter.cost_model.message_overhead

    def part(pixels: int, detail: str) -> HumanMessage:
        return HumanMessage(content=[{"type": "image_url", "image_url": {
            "url": f"data:image/png;base64,{_png_b64(pixels)}", "detail": detail}}])

    assert counter([part(512, "high")]) == 255 + overhead
    assert counter([part(1280, "low")]) == 85 + overhead
    assert counter([part(512, "auto")]) == 85 + overhead  # OpenAI picks: the formula's
    assert counter([part(1280, "auto")]) == 765 + overhead


def test_a_bare_dict_is_one_message_not_its_keys() -> None:
    """A dict passed alone was iterated as its keys and priced as two human messages,
    "role" and "content": a wrong count with no error."""
    counter = OpticalTokenCounter("openai")
    message = {"role": "user", "content": "안녕하세요, 서울의 날씨는 어떤가요? 🌧️"}
    assert counter(message) == counter([message]) == counter([HumanMessage(message["content"])])


@pytest.mark.parametrize("bad", [None, 5, b"bytes", [5], [{"content": "no role"}]])
def test_what_is_not_messages_raises_invalid_turn_error(bad: object) -> None:
    with pytest.raises(InvalidTurnError):
        OpticalTokenCounter("openai")(bad)


@pytest.mark.parametrize("bad", ["5", 1.5, True, -1, float("nan")])
def test_unknown_image_tokens_must_be_a_whole_number(bad: object) -> None:
    """"5" failed with a bare TypeError from "<"; 1.5 and True were kept and priced every
    image given by URL."""
    with pytest.raises(ConfigurationError, match="unknown_image_tokens"):
        OpticalTokenCounter("openai", unknown_image_tokens=bad)


def test_unknown_image_tokens_prices_an_image_given_by_url() -> None:
    url = HumanMessage(content=[{"type": "image", "url": "https://example.invalid/a.png"}])
    assert (OpticalTokenCounter("openai", unknown_image_tokens=300)([url])
            - OpticalTokenCounter("openai", unknown_image_tokens=0)([url])) == 300


def test_an_image_url_part_holding_the_url_string_is_priced_as_an_image() -> None:
    # The form ChatGoogleGenerativeAI takes; LangChain hands it over as a non_standard
    # block, whose base64 was priced as text.
    counter = OpticalTokenCounter("openai", unknown_image_tokens=1000)
    jpeg = io.BytesIO()
    Image.new("RGB", (1024, 512), "white").save(jpeg, format="JPEG")
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue()).decode()
    inline = HumanMessage(content=[{"type": "image_url", "image_url": url}])
    assert counter(inline) == counter.image_tokens(1024, 512) + 3
    remote = HumanMessage(content=[{"type": "image_url", "image_url": "https://x.invalid/a.png"}])
    assert counter(remote) == 1000 + 3


def test_provider_image_parts_are_priced_as_images_not_their_payload_as_text() -> None:
    # An OpenAI Responses input_image and a Gemini media block reach content_blocks as
    # non_standard blocks: their base64 (or bytes) was priced as text, ~730,000 tokens
    # for a 550 kB photo's bytes.
    counter = OpticalTokenCounter("openai", unknown_image_tokens=1000)
    jpeg = io.BytesIO()
    Image.new("RGB", (1024, 512), "white").save(jpeg, format="JPEG")
    raw = jpeg.getvalue()
    b64 = base64.b64encode(raw).decode()
    image = counter.image_tokens(1024, 512) + 3
    for part in [{"type": "input_image", "image_url": f"data:image/jpeg;base64,{b64}"},
                 {"type": "media", "mime_type": "image/jpeg", "data": b64},
                 {"type": "media", "mime_type": "image/jpeg", "data": raw}]:
        assert counter(HumanMessage(content=[part])) == image, part["type"]
    for part in [{"type": "input_image", "file_id": "file-1"},
                 {"type": "media", "mime_type": "image/png", "file_uri": "gs://b/a.png"}]:
        assert counter(HumanMessage(content=[part])) == 1000 + 3, part
    audio = HumanMessage(content=[{"type": "media", "mime_type": "audio/wav",
                                   "data": base64.b64encode(bytes(300_000)).decode()}])
    assert counter(audio) < 40  # its fields, not its payload


_CALL = {"name": "get_weather", "args": {"city": "Seoul"}, "id": "toolu_01",
         "type": "tool_call"}
_USE = {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
        "input": {"city": "Seoul"}}


def _streamed_tool_use(provider: dict[str, str]) -> AIMessageChunk:
    """langchain-anthropic's stream of one tool call, merged as a caller merges chunks."""
    start = AIMessageChunk(content=[{**_USE, "input": {}, "index": 0}], tool_call_chunks=[
        {"name": "get_weather", "args": "", "id": "toolu_01", "index": 0,
         "type": "tool_call_chunk"}], response_metadata=provider)
    delta = AIMessageChunk(content=[{"type": "input_json_delta", "index": 0,
                                     "partial_json": '{"city": "Seoul"}'}],
                           tool_call_chunks=[{"name": None, "args": '{"city": "Seoul"}',
                                              "id": None, "index": 0,
                                              "type": "tool_call_chunk"}],
                           response_metadata=provider)
    return start + delta


@pytest.mark.parametrize("message", [
    AIMessage(content=[{"type": "text", "text": "Let me check."}, _USE], tool_calls=[_CALL]),
    AIMessage(content=[{"type": "text", "text": "Let me check."}, _USE], tool_calls=[_CALL],
              response_metadata={"model_provider": "anthropic"}),
    _streamed_tool_use({}) + AIMessageChunk(content=[{"type": "text", "text": "Let me check.",
                                                      "index": 1}]),
    _streamed_tool_use({"model_provider": "anthropic"}) + AIMessageChunk(
        content=[{"type": "text", "text": "Let me check.", "index": 1}],
        response_metadata={"model_provider": "anthropic"}),
], ids=["tool_use", "tool_use-provider", "stream", "stream-provider"])
def test_a_tool_call_held_twice_by_the_message_is_priced_once(message: AIMessage) -> None:
    # langchain-anthropic's AIMessage holds each call as a tool_use block and in
    # tool_calls: without the provider in response_metadata (a message from an older
    # checkpoint, or built by hand) the block was priced as text beside the call, and a
    # merged stream's tool_call_chunk block likewise — an in-flight tool loop was priced
    # at twice its calls, and the middleware refused or trimmed early.
    counter = OpticalTokenCounter("openai")
    once = AIMessage(content=[{"type": "text", "text": "Let me check."}], tool_calls=[_CALL])
    assert message.tool_calls == [_CALL]
    assert counter(message) == counter(once)
    without = OpticalTokenCounter("openai")(AIMessage(content="Let me check."))
    assert counter(message) > without  # the call itself is priced


def test_a_call_held_only_as_a_content_block_is_priced_once() -> None:
    # An Anthropic-form assistant message converted from a dict has no tool_calls; its
    # tool_use block is its only copy of the call, priced as the call, once. A Responses
    # function_call block names the call by call_id (its id is the output item's own).
    counter = OpticalTokenCounter("openai")
    once = counter(AIMessage(content="Let me check.", tool_calls=[_CALL]))
    [converted] = convert_to_messages([{"role": "assistant", "content": [
        {"type": "text", "text": "Let me check."}, _USE]}])
    assert counter(converted) == once
    responses = AIMessage(content=[
        {"type": "text", "text": "Let me check."},
        {"type": "function_call", "name": "get_weather", "arguments": '{"city": "Seoul"}',
         "call_id": "toolu_01", "id": "fc_1"}], tool_calls=[_CALL])
    assert counter(responses) == once


def test_thinking_is_priced_as_its_text_without_its_signature() -> None:
    # Without the provider in response_metadata, a thinking block was priced as JSON with
    # its signature (opaque, hundreds of characters); LangChain's own translation (a
    # reasoning block) prices its text only. Both now cost the same.
    thinking = [{"type": "thinking", "thinking": "The user wants Seoul.",
                 "signature": "EqQBCkYIBxgCKkB" * 40}, {"type": "text", "text": "Sunny."}]
    counter = OpticalTokenCounter("openai")
    plain = counter(AIMessage(content=thinking))
    translated = counter(AIMessage(content=thinking,
                                   response_metadata={"model_provider": "anthropic"}))
    assert plain == translated == counter(AIMessage(content=[
        {"type": "reasoning", "reasoning": "The user wants Seoul."},
        {"type": "text", "text": "Sunny."}]))


def test_reasoning_in_additional_kwargs_is_priced_whatever_the_content_shape() -> None:
    # A reasoning model's thought in additional_kwargs["reasoning_content"] (DeepSeek,
    # Ollama, xAI, Groq) was priced when the content was a list of blocks but not when it
    # was a string: the same message cost 4 or 11 tokens by its shape. It is priced in
    # both (an upper bound: whether it goes back depends on the provider).
    counter = OpticalTokenCounter()
    thought = "I think the answer is yes because"
    as_str = AIMessage("hi", additional_kwargs={"reasoning_content": thought})
    as_list = AIMessage([{"type": "text", "text": "hi"}],
                        additional_kwargs={"reasoning_content": thought})
    assert counter.message(as_str) == counter.message(as_list) > counter.message(AIMessage("hi"))


def test_a_base64_document_inside_a_server_tool_result_is_priced_without_its_payload() -> None:
    # A web fetch's PDF (a base64 document source inside the result) was priced as the
    # text of its payload: ~1,000 tokens for 5,000 characters. It is priced as the marker
    # it is archived as, with or without the provider named.
    doc = {"type": "document", "title": "Q3", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "A" * 5000}}
    content = [{"type": "web_fetch_tool_result", "tool_use_id": "s1", "content": {
        "type": "web_fetch_result", "url": "https://x.example/q3.pdf", "content": doc}}]
    short = [{"type": "web_fetch_tool_result", "tool_use_id": "s1", "content": {
        "type": "web_fetch_result", "url": "https://x.example/q3.pdf",
        "content": {**doc, "source": {**doc["source"], "data": "A" * 8}}}}]
    counter = OpticalTokenCounter("openai")
    for meta in ({}, {"model_provider": "anthropic"}):
        big = counter.message(AIMessage(content=content, response_metadata=meta))
        assert big == counter.message(AIMessage(content=short, response_metadata=meta)) < 200


def test_a_responses_reasoning_summary_is_priced_whatever_the_message_names() -> None:
    # langchain-openai keeps a Responses reasoning item in additional_kwargs["reasoning"];
    # LangChain translates it into reasoning blocks only for list content of a message
    # naming openai, so the same message cost 4 or 11 tokens by its metadata and shape.
    # It is priced in every case (an upper bound), once.
    counter = OpticalTokenCounter()
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [
        {"type": "summary_text", "text": "I think the answer"},
        {"type": "summary_text", "text": "is yes because"}]}
    named = counter.message(AIMessage([{"type": "text", "text": "hi"}],
                                      additional_kwargs={"reasoning": reasoning},
                                      response_metadata={"model_provider": "openai"}))
    assert named > counter.message(AIMessage("hi"))
    for content in ("hi", [{"type": "text", "text": "hi"}]):
        for meta in ({}, {"model_provider": "openai"}):
            assert counter.message(AIMessage(content, additional_kwargs={
                "reasoning": reasoning}, response_metadata=meta)) == named


def test_a_computer_call_is_priced_as_a_call_and_its_screenshot_as_an_image() -> None:
    # A computer_call block was priced as the JSON of its whole item (a call not
    # recognised as one), and a computer_call_output's screenshot as the text of its
    # base64 data URL: thousands of tokens for one image.
    from langchain_core.messages import ToolMessage

    counter = OpticalTokenCounter("openai")
    png = _png_b64(64)
    shot = ToolMessage(content=[{"type": "computer_screenshot",
                                 "image_url": f"data:image/png;base64,{png}"}],
                       tool_call_id="call_1")
    as_image = HumanMessage(content=[{"type": "image", "base64": png,
                                      "mime_type": "image/png"}])
    assert counter.message(shot) == counter.message(as_image)
    call = {"type": "computer_call", "id": "cu_1", "call_id": "call_1",
            "status": "completed", "action": {"type": "click", "x": 4, "y": 2},
            "pending_safety_checks": []}
    listed = AIMessage(content="", tool_calls=[
        {"name": "computer", "args": {"type": "click", "x": 4, "y": 2}, "id": "call_1"}])
    assert counter.message(AIMessage(content=[call])) == counter.message(listed)


def test_a_spoken_answer_is_priced_as_its_transcript() -> None:
    # An audio answer (content "", additional_kwargs["audio"]) was priced as an empty
    # message, though it is archived, and sent back, as what the model said.
    counter = OpticalTokenCounter()
    audio = {"id": "au_1", "data": "UklGR" + "A" * 5000, "transcript": "Sunny, 12C."}
    assert counter.message(AIMessage("", additional_kwargs={"audio": audio})) == (
        counter.message(AIMessage("Sunny, 12C.")))


def test_an_anthropic_tool_result_in_a_human_message_is_priced_as_archived() -> None:
    # A tool_result block was priced as the JSON of the block: its image as the text of
    # its marker, whatever the image's size.
    from langchain_core.messages import ToolMessage

    counter = OpticalTokenCounter("openai")

    def result(side: int) -> HumanMessage:
        return HumanMessage([{"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "text", "text": "shot"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": _png_b64(side)}}]}])

    as_tool = ToolMessage([{"type": "text", "text": "[Tool result · call t1]"},
                           {"type": "text", "text": "shot"},
                           {"type": "image", "base64": _png_b64(1024),
                            "mime_type": "image/png"}], tool_call_id="t1")
    assert counter.message(result(1024)) == counter.message(as_tool)
    assert counter.message(result(1024)) > counter.message(result(64))


def test_responses_items_in_additional_kwargs_tool_outputs_are_priced() -> None:
    # An older langchain-openai's tool_outputs (a computer call, a web search, a
    # generated image) were priced as nothing: the message cost what "x" costs.
    counter = OpticalTokenCounter("openai")
    call = {"type": "computer_call", "id": "cu_1", "call_id": "c1", "status": "completed",
            "action": {"type": "click"}}
    listed = AIMessage("x", tool_calls=[{"name": "computer", "args": {"type": "click"},
                                         "id": "c1"}])
    assert counter.message(AIMessage("x", additional_kwargs={"tool_outputs": [call]})) == (
        counter.message(listed))
    search = {"type": "web_search_call", "id": "ws_1", "status": "completed",
              "action": {"type": "search", "query": "Titan"}}
    assert counter.message(AIMessage("x", additional_kwargs={"tool_outputs": [search]})) == (
        counter.message(AIMessage([
            {"type": "text", "text": "x"},
            {"type": "text", "text": '[server_tool_call: {"query":"Titan","type":"search"}]'
                                     '\n[server_tool_result: ""]'}])))
    png = _png_b64(512)
    image = {"type": "image_generation_call", "id": "ig_1", "status": "completed",
             "output_format": "png", "result": png}
    as_image = AIMessage([{"type": "text", "text": "x"},
                          {"type": "image", "base64": png, "mime_type": "image/png"}])
    assert counter.message(AIMessage("x", additional_kwargs={"tool_outputs": [image]})) == (
        counter.message(as_image))
