"""OCRCodec behind the Codec seam, the fallback tokenizer, and tier preprocessing."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from opticmem.encoder.byte_fallback import byte_fallback_tokenizer, placeholder_ids
from opticmem.encoder.codec import Codec, CodecError, VisionTokens, VisionTokensFormatError
from opticmem.encoder.config import preset
from opticmem.encoder.errors import InputError
from opticmem.encoder.examples import token_bytes
from opticmem.encoder.generate import GenerationConfig, Prompt, generate
from opticmem.encoder.model import build_model
from opticmem.encoder.ocr import AlignerFeed, OCRCodec
from opticmem.encoder.preprocess import PAD_COLOUR, fit_to_tier, pixel_batch, preprocess, to_rgb
from opticmem.encoder.token_cursor import TokenCursor, incomplete_tail
from opticmem.render import Cursor, PageLayout, RenderSettings, redraw, render_page
from opticmem.render.tiers import Tier


@pytest.fixture(scope="module")
def codec() -> OCRCodec:
    return OCRCodec.random("test", seed=0)


def odd_images() -> list[Image.Image]:
    rgba = Image.new("RGBA", (300, 200), (10, 200, 30, 0))
    return [
        Image.new("L", (512, 512), 255),
        rgba,
        Image.new("1", (1, 1), 1),
        Image.new("L", (20000, 20), 0),
        Image.new("L", (20, 20000), 128),
        Image.new("P", (64, 900)),
        Image.new("I;16", (50, 40), 40000),
        Image.new("F", (33, 77), 0.5),
        Image.new("CMYK", (100, 100), (0, 255, 0, 0)),
        Image.new("LA", (10, 10), (100, 50)),
        # Modes Pillow cannot convert to "L" directly (the ink count read them that way).
        Image.new("La", (16, 16)),
        Image.new("LAB", (30, 20), (200, 128, 128)),
    ]


def test_codec_satisfies_the_protocol(codec: OCRCodec) -> None:
    assert isinstance(codec, Codec)
    assert codec.name == "random:test:0"
    assert codec.render_settings is None


@pytest.mark.parametrize("tier", list(Tier))
def test_encode_any_image_at_every_tier(codec: OCRCodec, tier: Tier) -> None:
    # Base/Large run the tiny model at 4,096–6,400 SAM tokens: two images keep CPU time low.
    images = odd_images()[2:4] if tier in (Tier.BASE, Tier.LARGE) else odd_images()
    tokens = codec.encode(images, tier)
    assert len(tokens) == len(images)
    for vt in tokens:
        assert vt.tier is tier and vt.codec == codec.name
        assert vt.grid.shape == (tier.grid, tier.grid, 64) and vt.grid.dtype == np.float16
        assert np.isfinite(vt.grid).all()


def test_encode_is_deterministic_and_batch_independent(codec: OCRCodec) -> None:
    images = odd_images()[:3]
    a = codec.encode(images, "tiny")
    b = codec.encode(images[1:2], "tiny")
    assert np.array_equal(a[0].grid, codec.encode(images, "tiny")[0].grid)
    assert np.allclose(a[1].grid.astype(np.float32), b[0].grid.astype(np.float32), atol=2e-3)


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile on CPU needs a C++ compiler; none on this machine")
def test_compiled_encoder_gives_the_same_vision_tokens() -> None:
    eager = OCRCodec.random("test", seed=3)
    compiled = OCRCodec.random("test", seed=3).compile_encoder()
    images = odd_images()[:2]
    for a, b in zip(eager.encode(images, "tiny"), compiled.encode(images, "tiny"), strict=True):
        assert a.grid.shape == b.grid.shape
        assert np.allclose(a.grid.astype(np.float32), b.grid.astype(np.float32), atol=2e-3)


def test_decode_mixed_tiers_in_one_call(codec: OCRCodec) -> None:
    img = Image.new("L", (640, 640), 255)
    tokens = [*codec.encode([img], "tiny"), *codec.encode([img, img], "small")]
    recs = codec.decode(tokens, max_new_tokens=5)
    assert [r.tier for r in recs] == [Tier.TINY, Tier.SMALL, Tier.SMALL]
    for r in recs:
        assert r.codec == codec.name and 0 <= r.tokens <= 5
        assert 0.0 < r.confidence <= 1.0 and isinstance(r.text, str)
    assert recs[1] .text == recs[2].text
    assert recs == codec.decode(tokens, max_new_tokens=5) or all(
        a.text == b.text and a.confidence == b.confidence
        for a, b in zip(recs, codec.decode(tokens, max_new_tokens=5), strict=True)
    )


def test_decode_round_trips_through_bytes(codec: OCRCodec) -> None:
    [vt] = codec.encode([Image.new("L", (512, 512), 0)], "tiny")
    again = VisionTokens.from_bytes(vt.to_bytes())
    a = codec.decode([vt], max_new_tokens=4)[0]
    b = codec.decode([again], max_new_tokens=4)[0]
    assert (a.text, a.tokens, a.confidence) == (b.text, b.tokens, b.confidence)


def test_decode_rejects_foreign_tokens(codec: OCRCodec) -> None:
    [vt] = codec.encode([Image.new("L", (512, 512), 0)], "tiny")
    foreign = VisionTokens(tier=vt.tier, grid=vt.grid, codec="someone-else")
    with pytest.raises(CodecError, match="someone-else"):
        codec.decode([foreign])
    wide = VisionTokens(tier=Tier.TINY, grid=np.zeros((8, 8, 32), np.float16))
    with pytest.raises(InputError, match="width"):
        codec.decode([wide])


def test_one_image_or_one_token_record_not_in_a_list_is_an_input_error(codec: OCRCodec) -> None:
    # Both are batch calls; a bare image or record used to fail with a TypeError ("Image
    # has no len()", "VisionTokens is not iterable").
    image = Image.new("L", (512, 512), 255)
    with pytest.raises(InputError, match=r"\[image\]"):
        codec.encode(image, "tiny")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"\[image\]"):
        codec.read(image, "tiny")  # type: ignore[arg-type]
    [vt] = codec.encode([image], "tiny")
    with pytest.raises(InputError, match=r"\[tokens\]"):
        codec.decode(vt)  # type: ignore[arg-type]


def test_a_generator_or_set_of_pages_is_an_input_error(codec: OCRCodec) -> None:
    # A generator failed with a bare TypeError ("object of type 'generator' has no
    # len()"), after decode's checks had used it up; a set has no order for the results.
    image = Image.new("L", (512, 512), 255)
    with pytest.raises(InputError, match=r"encode takes a sequence .* got generator"):
        codec.encode((img for img in [image]), "tiny")  # type: ignore[arg-type]
    [vt] = codec.encode((image,), "tiny")  # a tuple is a sequence
    with pytest.raises(InputError, match=r"decode takes a sequence .* got generator"):
        codec.decode(v for v in [vt])  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"decode takes a sequence .* got set"):
        codec.decode({vt})  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"decode takes a sequence .* got str"):
        codec.decode("tokens")  # type: ignore[arg-type]


def test_decode_rejects_what_is_not_a_finite_vision_token_grid(codec: OCRCodec) -> None:
    # A NaN grid used to decode to a recollection of NaN confidence; a string, to fail
    # with an AttributeError.
    for bad in (np.nan, np.inf):
        grid = np.full((8, 8, 64), bad, np.float32)
        with pytest.raises(InputError, match="NaN or infinite"):
            codec.decode([VisionTokens(Tier.TINY, grid)], max_new_tokens=2)
    with pytest.raises(InputError, match="VisionTokens"):
        codec.decode(["not vision tokens"])  # type: ignore[list-item]


@pytest.mark.parametrize("value", [1e39, 1e20])
def test_decode_rejects_grids_too_large_to_read(codec: OCRCodec, value: float) -> None:
    # Finite as float64 but infinite in the weights' float32 (1e39), or finite there but
    # past what the decoder's normalisation squares (1e20): both read back as empty text
    # of NaN confidence, with nothing to say so.
    grid = np.full((8, 8, 64), value, np.float64)
    with pytest.raises(InputError, match="magnitude"):
        codec.decode([VisionTokens(Tier.TINY, grid)], max_new_tokens=2)
    [fine] = codec.decode([VisionTokens(Tier.TINY, np.full((8, 8, 64), 1e4))],
                          max_new_tokens=2)
    assert 0.0 < fine.confidence <= 1.0


def test_vision_tokens_of_any_real_dtype_round_trip_through_bytes() -> None:
    # float64 (numpy's default) used to be written as "<f8", which from_bytes refuses.
    for dtype, back in ((np.float64, np.float16), (np.int32, np.float16),
                        (np.float32, np.float32), (">f4", np.float32)):
        vt = VisionTokens("tiny", np.ones((8, 8, 4), dtype))  # a tier name is parsed
        again = VisionTokens.from_bytes(vt.to_bytes())
        assert vt.tier is Tier.TINY and again.grid.dtype == back
        assert np.array_equal(again.grid, vt.grid)
    big = VisionTokens(Tier.TINY, np.full((8, 8, 4), 1e6))
    assert VisionTokens.from_bytes(big.to_bytes()).grid.dtype == np.float32
    # past float32's range: written as infinity, it read back as a grid of inf
    with pytest.raises(ValueError, match="past float32's range"):
        VisionTokens(Tier.TINY, np.full((8, 8, 4), 1e39)).to_bytes()
    for grid in ([[0.0]], np.zeros((8, 8, 4), complex), np.zeros((8, 8, 4), object)):
        with pytest.raises(ValueError, match="real-valued numpy grid"):
            VisionTokens(Tier.TINY, grid)  # type: ignore[arg-type]


def test_malformed_vision_token_headers_raise_format_errors() -> None:
    vt = VisionTokens(Tier.TINY, np.zeros((8, 8, 4), np.float16))
    data = vt.to_bytes()
    n = int.from_bytes(data[4:8], "little")
    header, body = json.loads(data[8 : 8 + n]), data[8 + n :]

    def record(head: object, payload: bytes = body) -> bytes:
        raw = json.dumps(head).encode()
        return data[:4] + len(raw).to_bytes(4, "little") + raw + payload

    bad = [record([1, 2]), record({**header, "v": True}), record({**header, "codec": None}),
           record({**header, "shape": [8.5, 8, 4]}), record({**header, "shape": [8, 8, True]}),
           data[:4] + (200_002).to_bytes(4, "little") + b"[" * 100_001 + b"]" * 100_001]
    for blob in bad:
        with pytest.raises(VisionTokensFormatError):
            VisionTokens.from_bytes(blob)
    assert VisionTokens.from_bytes(memoryview(data)).grid.shape == (8, 8, 4)


def test_random_codecs_are_reproducible() -> None:
    a = OCRCodec.random("test", seed=1)
    b = OCRCodec.random("test", seed=1)
    c = OCRCodec.random("test", seed=2)
    img = [Image.new("L", (512, 512), 200)]
    ga, gb, gc = (x.encode(img, "tiny")[0].grid for x in (a, b, c))
    assert np.array_equal(ga, gb) and not np.array_equal(ga, gc)


def test_prompt_template_needs_image_mark() -> None:
    with pytest.raises(InputError, match="<image>"):
        OCRCodec.random("test", prompt="Free OCR.")
    codec = OCRCodec.random("test", prompt="<image>\nFree OCR.")
    [rec] = codec.read([Image.new("L", (512, 512), 0)], "tiny", max_new_tokens=2)
    assert rec.tokens <= 2


def test_fallback_tokenizer_layout_and_round_trip() -> None:
    cfg = preset("bundled").decoder
    tok = byte_fallback_tokenizer(cfg)
    assert tok.get_vocab_size() == cfg.vocab_size
    assert [tok.token_to_id(t) for t in ("<bos>", "<eos>", "<pad>", "<image>")] == [0, 1, 2, 3]
    text = "Project Titan — 3月 deadline ✓\n\tcode: x = 0xFF;"
    ids = tok.encode(text).ids
    assert len(ids) == len(text.encode()) and all(4 <= i < 260 for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode([0, 1, 2, 3]) == ""
    assert min(placeholder_ids(tok)) == 260 and len(placeholder_ids(tok)) == 4096 - 260
    official = byte_fallback_tokenizer(preset("official").decoder)
    assert official.token_to_id("<image>") == 128815
    assert official.decode(official.encode("héllo").ids) == "héllo"


def test_preprocess_modes_and_range() -> None:
    imgs = odd_images()
    for tier in Tier:
        batch = preprocess(imgs[:3], tier)
        assert batch.shape == (3, 3, tier.pixels, tier.pixels) and batch.dtype == torch.float32
        assert float(batch.min()) >= -1.0 and float(batch.max()) <= 1.0
    assert preprocess([], "tiny").shape == (0, 3, 512, 512)


def test_pad_tiers_keep_aspect_with_grey_and_resize_tiers_stretch() -> None:
    wide = Image.new("L", (2000, 1000), 255)
    padded = np.asarray(fit_to_tier(wide, "base"))
    assert padded.shape == (1024, 1024, 3)
    assert tuple(padded[0, 0]) == PAD_COLOUR and tuple(padded[512, 512]) == (255, 255, 255)
    assert tuple(padded[255, 512]) == PAD_COLOUR and tuple(padded[257, 512]) == (255, 255, 255)
    stretched = np.asarray(fit_to_tier(wide, "small"))
    assert stretched.shape == (640, 640, 3) and (stretched == 255).all()
    page = Image.new("L", (1280, 1280), 77)
    assert np.array_equal(np.asarray(fit_to_tier(page, "large"))[..., 0], np.asarray(page))
    grey = preprocess([Image.new("RGB", (8, 8), PAD_COLOUR)], "base")
    assert torch.allclose(grey, torch.full_like(grey, 127 / 127.5 - 1))


@pytest.mark.parametrize("size", [(640, 640), (300, 900), (1500, 700)])
def test_grey_pages_preprocess_exactly_as_their_rgb_copies(size: tuple[int, int]) -> None:
    """Greyscale batches stay one band until normalised (a third of the bytes); the values
    equal those of the same pages converted to RGB, at every tier, resized or padded."""
    rng = np.random.default_rng(0)
    grey = Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8), "L")
    for tier in Tier:
        assert pixel_batch([grey], tier).shape == (1, tier.pixels, tier.pixels)
        assert torch.equal(preprocess([grey], tier), preprocess([grey.convert("RGB")], tier))
    mixed = pixel_batch([grey, grey.convert("RGB")], "tiny")
    assert mixed.shape == (2, 512, 512, 3) and torch.equal(mixed[0], mixed[1])


def test_exif_orientation_is_applied() -> None:
    img = Image.new("L", (40, 10), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    loaded = Image.open(io.BytesIO(buf.getvalue()))
    assert to_rgb(loaded).size == (10, 40)


def test_high_bit_depth_greys_are_scaled_not_clipped() -> None:
    ramp = Image.fromarray(np.array([[0, 30000, 60000]], dtype=np.uint16))
    assert ramp.mode.startswith("I")
    assert list(np.asarray(to_rgb(ramp))[0, :, 0]) == [0, 127, 255]


@pytest.mark.usefixtures("pillow_11_3_fromarray")
@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_high_bit_depth_greys_make_no_deprecated_pillow_call() -> None:
    ramp = Image.fromarray(np.array([[0, 30000, 60000]], dtype=np.uint16))
    assert list(np.asarray(to_rgb(ramp))[0, :, 0]) == [0, 127, 255]


def test_float_greys_with_non_finite_pixels_keep_their_finite_pixels() -> None:
    # One infinite pixel used to set the scale to 0: every pixel became NaN, then black.
    arr = np.array([[np.inf, 1000.0, 500.0, np.nan, -np.inf]], dtype=np.float32)
    grey = np.asarray(to_rgb(Image.fromarray(arr)))[0, :, 0]
    assert list(grey) == [255, 255, 127, 0, 0]


def test_preprocess_rejects_non_images() -> None:
    with pytest.raises(InputError):
        preprocess([np.zeros((4, 4))], "tiny")


@pytest.mark.parametrize("tier", ["huge", None, 3, ""])
def test_unknown_tiers_are_codec_errors(codec: OCRCodec, tier: object) -> None:
    # Tier.parse's bare ValueError escaped a `except CodecError` around a codec call.
    image = Image.new("L", (512, 512), 255)
    for call in (lambda: codec.encode([image], tier), lambda: codec.encode([], tier),  # type: ignore[arg-type]
                 lambda: preprocess([image], tier)):  # type: ignore[arg-type]
        with pytest.raises(InputError, match="unknown tier"):
            call()


def test_unreadable_image_files_raise_input_errors() -> None:
    # Pillow decodes lazily: a truncated file or a closed image used to fail in the middle
    # of preprocessing with a bare OSError or ValueError.
    buf = io.BytesIO()
    Image.new("RGB", (600, 600), (1, 2, 3)).save(buf, "PNG")
    truncated = Image.open(io.BytesIO(buf.getvalue()[: len(buf.getvalue()) // 2]))
    closed = Image.open(io.BytesIO(buf.getvalue()))
    closed.close()
    for image in (truncated, closed):
        with pytest.raises(InputError, match="cannot read the image"):
            preprocess([image], "tiny")


def test_decode_feeds_the_layout_aligner() -> None:
    codec = OCRCodec.random("test", seed=3)
    codec.generation = GenerationConfig(no_repeat_ngram_size=0, stop_token_ids=(-1,))
    model = codec.model
    assert codec.aligned and model.aligner is not None
    aligner = model.aligner
    with torch.no_grad():  # its output layer starts at zero (a no-op): make it matter
        aligner.mix[1].weight.normal_(std=0.5)
    [vt] = codec.encode([Image.new("L", (512, 512), 255)], "tiny")
    grid = torch.from_numpy(vt.grid.astype(np.float32))[None]  # (1, g, g, D)
    slots = model.grid_to_slots(grid)
    settings = RenderSettings()
    table = token_bytes(codec.tokenizer)
    feed = AlignerFeed(model, grid, settings, TokenCursor(table, grid.device))
    S = Tier.TINY.slots
    cfg = GenerationConfig(max_new_tokens=6, no_repeat_ngram_size=0, stop_token_ids=(-1,))
    [got] = generate(
        model, [Prompt(slots=slots[0])], cfg, token_hook=feed, prompt_extra=feed.prompt_extra(1 + S)
    )
    # Reference: recompute the whole sequence each step, the aligner reading the cell of
    # the next character after the bytes generated so far (the renderer's Cursor).
    d = model.cfg.decoder
    ids = [d.bos_token_id] + [d.image_token_id] * S
    out: list[int] = []
    with torch.no_grad():
        for _ in range(6):
            cells, written = [], b""
            for tok in [None, *out]:
                if tok is not None:
                    written += table[tok]
                cursor = Cursor()
                cursor.feed(written[: len(written) - incomplete_tail(written)].decode(
                    "utf-8", errors="replace"))
                cells.append(cursor.position)
            extra = torch.zeros(1, len(ids) + len(out), d.hidden_size)
            reads = aligner(grid, torch.tensor(cells), torch.zeros(len(cells), dtype=torch.long),
                            settings)
            extra[0, S:] = reads
            logits = model(torch.tensor([ids + out]), image_slots=slots, extra_embeds=extra)
            out.append(int(logits[0, -1].argmax()))
    assert got.token_ids == out
    [rec] = codec.decode([vt], max_new_tokens=6)
    assert rec.text == redraw(codec.detokenize(out))

    def no_aligner(generated: list[list[int]], step: int) -> None:
        return None

    [plain] = generate(model, [Prompt(slots=slots[0])], cfg, step_hook=no_aligner)
    assert plain.token_ids != out


def test_a_layout_aware_codec_returns_text_that_fits_the_page_grid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What the decoder wrote: a row of spaces where the page has an empty line, spaces
    # before a line end, and more lines than the page has rows (52 at the default
    # settings). None of them can be on a page of the renderer's grid.
    read = "x = joined\n" + " " * 104 + "\n    y   " + "\nz" * 52
    # A line one character too wide for its row wraps, yet is one line the decoder wrote:
    # laid out, the page has 53 rows, and none is cut.
    wide = "w" * 105 + "\nz" * 51
    aligned = OCRCodec.random("test", seed=1)
    plain = OCRCodec(build_model(preset("test", align=None), device="cpu", seed=1), name="plain")
    got: dict[tuple[bool, str], str] = {}
    for codec in (aligned, plain):
        codec.generation = GenerationConfig(max_new_tokens=2)
        [vt] = codec.encode([Image.new("L", (512, 512), 255)], "tiny")
        for text in (read, wide):
            monkeypatch.setattr(codec, "detokenize", lambda ids, text=text: text)
            got[codec.aligned, text] = codec.decode([vt])[0].text
    assert got[True, read] == "x = joined\n\n    y" + "\nz" * 49
    assert got[True, read].count("\n") + 1 == RenderSettings().rows == 52
    assert got[True, wide] == "w" * 104 + "\nw" + "\nz" * 51
    assert got[False, read] == read and got[False, wide] == wide  # left alone: no grid


EVERY_DECODING_PATH = pytest.mark.parametrize(
    ("device", "continuous"),
    [("cpu", False), ("cpu", True), pytest.param("cuda", False, marks=pytest.mark.gpu),
     pytest.param("cuda", True, marks=pytest.mark.gpu)],
)
"""Batched and continuous decoding, eager on CPU and as CUDA graphs on a GPU."""


def scripted_codec(
    monkeypatch: pytest.MonkeyPatch, device: str, continuous: bool, script: dict[str, float]
) -> OCRCodec:
    """A random codec (two rows at a time) whose decoder gives every step the same logits:
    ``script`` maps a token's text (``"<eos>"`` for the end of page) to its score, the rest
    score 0 — a decoder with a fixed habit, whatever the page holds."""
    codec = OCRCodec.random("test", seed=1, device=device, batch_size=2)
    codec.continuous = continuous
    d = codec.model.cfg.decoder
    scores = {d.eos_token_id if text == "<eos>" else codec._ids(text)[0]: v
              for text, v in script.items()}

    def habit(hidden: torch.Tensor) -> torch.Tensor:
        logits = hidden.new_zeros(hidden.shape[0], d.vocab_size)
        for token, v in scores.items():
            logits[:, token] = v
        return logits

    monkeypatch.setattr(codec.model.decoder, "logits", habit)
    return codec


@EVERY_DECODING_PATH
def test_decoding_stops_at_the_first_line_past_the_page(
    monkeypatch: pytest.MonkeyPatch, device: str, continuous: bool
) -> None:
    """A decoder that reads on past a page's last row stops there, in every decoding path
    (batched, continuous, CUDA graphs), and returns what it read up to the page's end."""
    codec = scripted_codec(monkeypatch, device, continuous, {"\n": 5.0})  # line after line
    rows = RenderSettings().rows
    [vt] = codec.encode([Image.new("L", (512, 512), 255)], "tiny")
    for limit, tokens, finished in [(rows + 30, rows, 1.0), (rows - 1, rows - 1, 0.0)]:
        codec.generation = GenerationConfig(
            max_new_tokens=limit, no_repeat_ngram_size=0, cuda_graphs=device == "cuda",
            graph_width=64,
        )
        recs = codec.decode([vt, vt, vt])
        assert {(r.tokens, r.extra["finished"]) for r in recs} == {(tokens, finished)}
        assert {r.text for r in recs} == {codec._on_grid("\n" * tokens)}
    # Without the stop the same pages decode to the token limit, to the same text.
    codec.stop_past_page = False
    codec.generation = replace(codec.generation, max_new_tokens=rows + 30)
    recs = codec.decode([vt, vt, vt])
    assert {(r.tokens, r.extra["finished"]) for r in recs} == {(rows + 30, 0.0)}
    assert {r.text for r in recs} == {codec._on_grid("\n" * rows)}


@EVERY_DECODING_PATH
def test_pages_do_not_end_above_their_last_row_of_ink(
    monkeypatch: pytest.MonkeyPatch, device: str, continuous: bool
) -> None:
    """A decoder that would end every page at once reads on, line by line, to the row of
    its page's last ink, in every decoding path (batched, continuous with rows that change
    pages, CUDA graphs); without the ink count, or with the hold off, it ends at once."""
    # Ends the page first, else breaks the line.
    codec = scripted_codec(monkeypatch, device, continuous, {"<eos>": 6.0, "\n": 5.0})
    codec.generation = GenerationConfig(max_new_tokens=40, no_repeat_ngram_size=0,
                                        cuda_graphs=device == "cuda", graph_width=64)
    [vt] = codec.encode([Image.new("L", (512, 512), 255)], "tiny")
    assert vt.ink_rows == 0
    inks = [0, 5, 12, 1, 30]
    pages = [replace(vt, ink_rows=k) for k in inks]
    recs = codec.decode(pages)
    assert [(r.tokens, r.extra["finished"]) for r in recs] == [
        (max(k - 1, 0), 1.0) for k in inks
    ]
    assert [r.text for r in recs] == [codec._on_grid("\n" * max(k - 1, 0)) for k in inks]
    codec.read_to_ink = False
    assert {r.tokens for r in codec.decode(pages)} == {0}


def test_encoding_reads_where_the_writing_ends() -> None:
    """A codec of our grid counts the page's rows of ink when it encodes it, and the count
    travels with the vision tokens' bytes; a codec that reads any image leaves it unknown."""
    lines = ("Project Titan", "", "due 2026-03-14", "", "", "ok.")
    page = PageLayout(lines=lines, sources=(), settings=RenderSettings(), complete=False)
    aligned = OCRCodec.random("test", seed=0)
    plain = OCRCodec(build_model(preset("test", align=None), device="cpu", seed=0), name="p")
    for tier in ("large", "tiny"):
        [vt] = aligned.encode([render_page(page, tier).convert("RGB")], tier)
        assert vt.ink_rows == 6
        assert VisionTokens.from_bytes(vt.to_bytes()).ink_rows == 6
        [other] = plain.encode([render_page(page, tier)], tier)
        assert other.ink_rows is None and VisionTokens.from_bytes(other.to_bytes()).ink_rows is None
    with pytest.raises(ValueError, match="ink_rows"):
        replace(vt, ink_rows=-1)
    data = vt.to_bytes()
    n = int.from_bytes(data[4:8], "little")
    for ink in ('"6"', "-2", "true"):
        header = data[8 : 8 + n].replace(b'"ink":6', f'"ink":{ink}'.encode())
        bad = data[:4] + len(header).to_bytes(4, "little") + header + data[8 + n :]
        with pytest.raises(VisionTokensFormatError, match="ink_rows"):
            VisionTokens.from_bytes(bad)


def test_aligner_feed_needs_one_ink_count_per_page() -> None:
    codec = OCRCodec.random("test", seed=0)
    grid = torch.zeros(2, 8, 8, codec.model.cfg.embed_dim)
    cursor = TokenCursor(token_bytes(codec.tokenizer), "cpu")
    with pytest.raises(InputError, match="ink_rows"):
        AlignerFeed(codec.model, grid, RenderSettings(), cursor, ink_rows=[3])
    feed = AlignerFeed(codec.model, grid, RenderSettings(), cursor, ink_rows=[3, 0])
    assert feed.above_ink().tolist() == [True, False]


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "P"])
def test_transparency_reads_as_white_paper(mode: str) -> None:
    # Black ink on a transparent background: dropping alpha would make it all black.
    image = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (5, 5, 15, 15))
    if mode == "P":
        image = image.convert("P")  # a palette with a transparent entry
        image.info["transparency"] = image.getpixel((0, 0))
    elif mode != "RGBA":
        image = image.convert(mode)
    rgb = np.asarray(to_rgb(image))
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[10, 10].tolist() == [0, 0, 0]


def test_a_grey_image_with_a_transparent_colour_reads_as_paper_in_any_batch() -> None:
    # A grey PNG with a tRNS colour (black as transparent) was kept as stored when every
    # image of the batch was grey, so its background read as black ink on 52 rows, but
    # as white paper in a batch that also held an RGB image: one page, two readings.
    image = Image.new("L", (512, 512), 0)
    image.paste(255, (100, 100, 200, 200))
    buf = io.BytesIO()
    image.save(buf, "PNG", transparency=0)
    with Image.open(buf) as grey:
        grey.load()
        assert grey.mode == "L" and grey.has_transparency_data
        alone = pixel_batch([grey], "tiny")
        mixed = pixel_batch([grey, Image.new("RGB", (5, 5))], "tiny")
        assert alone.shape == (1, 512, 512)
        assert torch.equal(alone[0], mixed[0, ..., 0]) and int(alone.min()) == 255
        codec = OCRCodec.random("test", seed=0)
        [vt] = codec.encode([grey], "tiny")
        [vt_mixed, _] = codec.encode([grey, Image.new("RGB", (5, 5))], "tiny")
    assert np.array_equal(vt.grid, vt_mixed.grid)
    assert vt.ink_rows == vt_mixed.ink_rows == 0


def test_one_codec_decodes_from_two_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh codec packs its expert weights on first use (PackedWeights re-points each
    # parameter at a slice of one tensor). Two threads decoding at once packed together:
    # one re-pointed the parameters at its tensor while the other checked its own, and
    # decode raised "packed weights do not view their parameters" (the bundled codec did
    # so on CPU for two pages read from two threads). A pause after packing widens that
    # window so the race shows on every run.
    import threading
    import time

    from opticmem.encoder.packing import PackedWeights

    pack = PackedWeights._pack

    def slow_pack(self: PackedWeights) -> torch.Tensor:
        packed = pack(self)
        time.sleep(0.05)
        return packed

    tokens = OCRCodec.random("test", seed=0).encode([Image.new("L", (512, 512), 255)], "tiny")
    expected = [r.text for r in OCRCodec.random("test", seed=0).decode(tokens,
                                                                        max_new_tokens=6)]
    monkeypatch.setattr(PackedWeights, "_pack", slow_pack)
    shared = OCRCodec.random("test", seed=0)
    start = threading.Barrier(2)
    results: dict[int, object] = {}

    def read(i: int) -> None:
        start.wait()
        try:
            results[i] = [r.text for r in shared.decode(tokens, max_new_tokens=6)]
        except Exception as exc:  # the failure is the finding
            results[i] = exc

    threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: expected, 1: expected}


def test_a_forked_child_gets_a_free_codec_call_lock() -> None:
    # The call lock of test_one_codec_decodes_from_two_threads, held by a thread of the
    # parent at the fork (a background reader mid-decode), would stay held in the child
    # for good, and its first encode or decode would wait forever.
    import os
    import threading

    codec = OCRCodec.random("test", seed=0)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with codec._call_lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        pid = os.fork()
        if pid == 0:  # the child: only exit codes leave it
            os._exit(0 if codec._call_lock.acquire(timeout=5) else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        holder.join()
    assert os.waitstatus_to_exitcode(status) == 0


def test_codec_arguments_are_checked_before_any_model_is_built(
    codec: OCRCodec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # batch_size "32" escaped as a bare TypeError and 1.5 was kept, to fail the first
    # encode; a dict for generation was kept, to fail the first decode; random() took
    # dtype=torch.int8 and seed "x" to torch's own TypeError/RuntimeError; and
    # from_pretrained read every shard before refusing batch_size=0.
    for size in ("32", 1.5, 0, True):
        with pytest.raises(InputError, match="batch_size must be a whole number"):
            OCRCodec.random("test", batch_size=size)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="batch_size must be a whole number"):
            codec.batch_size = size  # type: ignore[assignment]
    assert codec.batch_size == 32  # a refused value leaves the codec as it was
    with pytest.raises(InputError, match="generation must be a GenerationConfig"):
        OCRCodec.random("test", generation={"max_new_tokens": 3})  # type: ignore[arg-type]
    with pytest.raises(InputError, match="generation must be a GenerationConfig"):
        codec.generation = {"max_new_tokens": 3}  # type: ignore[assignment]
    assert isinstance(codec.generation, GenerationConfig)
    with pytest.raises(InputError, match="dtype"):
        OCRCodec.random("test", dtype=torch.int8)
    for seed in ("x", 1.5, 2**64):
        with pytest.raises(InputError, match="seed must be a whole number"):
            OCRCodec.random("test", seed=seed)  # type: ignore[arg-type]

    from opticmem.encoder.checkpoint import save_checkpoint

    saved = save_checkpoint(codec.model, tmp_path / "ckpt")

    def weights(*args: object, **kwargs: object) -> None:
        raise AssertionError("the weights were loaded before the arguments were checked")

    monkeypatch.setattr("opticmem.encoder.ocr.load_checkpoint", weights)
    with pytest.raises(InputError, match="batch_size"):
        OCRCodec.from_pretrained(saved, batch_size=0)


@pytest.mark.parametrize("continuous", [False, True])
def test_ink_counts_past_the_page_read_as_a_full_page(continuous: bool) -> None:
    # VisionTokens (and their bytes) take any int ≥ 0; 2**63 and up failed in decode with
    # a bare "Overflow when unpacking long long". No page holds more rows than its grid.
    codec = OCRCodec.random("test", seed=0)
    codec.continuous = continuous
    [vt] = codec.encode([Image.new("L", (512, 512), 255)], "tiny")
    full = replace(vt, ink_rows=RenderSettings().rows)
    huge = VisionTokens.from_bytes(replace(vt, ink_rows=2**64).to_bytes())
    assert huge.ink_rows == 2**64
    [want] = codec.decode([full], max_new_tokens=6)
    [got] = codec.decode([huge], max_new_tokens=6)
    assert (got.text, got.tokens) == (want.text, want.tokens)
