"""The teacher-forced training step computes the model's general forward, sync-free.

:func:`~opticmem.encoder.bundled.training_step` takes shortcuts that decoding and the
general forward do not: the aligner reads through ``prepare``/``read``, the vision slots
are placed by position, and the labelled steps come from the batch instead of a mask.
These tests hold it to the general forward (``embed_inputs`` + the aligner's ``forward``)
in float64, values and gradients, on batches :func:`collate` made from rendered pages.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from opticmem.encoder import synth
from opticmem.encoder.bundled import BUNDLED_TOKENIZER, special_ids, training_step
from opticmem.encoder.config import preset
from opticmem.encoder.examples import IGNORE, Example, collate, make_examples, token_bytes
from opticmem.encoder.model import OCRModel, build_model
from opticmem.encoder.moe import TrainDispatch
from opticmem.encoder.preprocess import normalise_pixels
from opticmem.encoder.train import TrainConfig, update, use_moe_dispatch
from opticmem.render import RenderSettings, Tier

FIXTURE = Path(__file__).parent / "fixtures" / "synth"


@pytest.fixture(scope="module")
def model() -> OCRModel:
    m = build_model(preset("test"), device="cpu", seed=5).double()
    assert m.aligner is not None
    with torch.no_grad():  # the aligner's output layer starts at zero: make it matter
        for p in m.aligner.mix.parameters():
            p.normal_(std=0.3)
    return m


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(synth.DATA_ENV, str(FIXTURE))
        stream = synth.page_stream(11, "train", RenderSettings())
        pages = [next(stream) for _ in range(2)]
    tok = Tokenizer.from_file(str(BUNDLED_TOKENIZER))
    table = token_bytes(tok)
    made = [ex for page in pages for ex in make_examples(page, [Tier.TINY], tok, table)]
    # Transcripts of different lengths: rows are padded, so masks and indices must agree.
    assert len({len(ex.ids) for ex in made}) == 2
    return made


@pytest.fixture(scope="module")
def batch(model: OCRModel, examples: list[Example]) -> dict[str, torch.Tensor]:
    return collate(examples, **special_ids(model.cfg.decoder))


def _general_forward(model: OCRModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Logits, labels and aligner read-out through the model's general entry points."""
    assert model.aligner is not None
    grid = model.encode_grid(normalise_pixels(batch["images"]).double())
    rows, positions = batch["aligned"].nonzero(as_tuple=True)
    embeds = model.aligner(grid, batch["cells"][rows, positions], rows, RenderSettings())
    extra = torch.zeros(*batch["aligned"].shape, grid.shape[-1], dtype=grid.dtype)
    extra[rows, positions] = embeds
    x = model.embed_inputs(batch["input_ids"], model.grid_to_slots(grid), extra)
    hidden = model.decoder(x)
    sel = batch["labels"] != IGNORE
    readout = model.decoder.logits(model.decoder.norm(embeds))
    return model.decoder.logits(hidden[sel]), batch["labels"][sel], readout


def _loss(logits: torch.Tensor, labels: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels) + 0.5 * F.cross_entropy(readout, labels)


def test_collate_lists_the_labelled_steps_in_row_major_order(
    batch: dict[str, torch.Tensor],
) -> None:
    assert torch.equal(batch["labelled"], (batch["labels"] != IGNORE).nonzero())
    assert torch.equal(batch["labelled"], batch["aligned"].nonzero())


def test_training_step_equals_the_general_forward_in_values_and_gradients(
    model: OCRModel, batch: dict[str, torch.Tensor]
) -> None:
    model.train()
    model.zero_grad()
    out = training_step(model, batch, RenderSettings())
    assert out.readout is not None
    _loss(out.logits, out.labels, out.readout).backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    logits, labels, readout = _general_forward(model, batch)
    _loss(logits, labels, readout).backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    assert torch.equal(out.labels, labels)
    torch.testing.assert_close(out.logits, logits, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out.readout, readout, rtol=1e-9, atol=1e-9)
    assert got.keys() == want.keys() and any("aligner" in n for n in got)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-7, atol=1e-10, msg=name)


def test_training_step_finds_the_labelled_steps_itself_when_the_batch_does_not_list_them(
    model: OCRModel, batch: dict[str, torch.Tensor]
) -> None:
    model.eval()
    unlisted = {k: v for k, v in batch.items() if k != "labelled"}
    with torch.no_grad():
        a = training_step(model, batch, RenderSettings())
        b = training_step(model, unlisted, RenderSettings())
    assert torch.equal(a.logits, b.logits) and torch.equal(a.labels, b.labels)


def _update_grads(model: OCRModel, batch: dict[str, torch.Tensor]
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The trainer's losses (main, read-out, load-balancing) and every parameter's
    gradient from one :func:`update` on ``batch`` — with a zero learning rate and no
    clipping, so the model is left as it was."""
    cfg = TrainConfig(out_dir=Path("unused"), grad_clip=math.inf)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    done = update(model, opt, batch, lambda b: training_step(model, b, RenderSettings()), cfg)
    aux = model.decoder.aux_loss()
    assert done.readout_loss is not None and aux is not None
    losses = {"main": done.loss, "readout": done.readout_loss, "aux": aux}
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return losses, grads


@pytest.mark.parametrize("moe", ["grouped", "dense"])
def test_length_buckets_change_no_loss_and_no_gradient(
    model: OCRModel, examples: list[Example], moe: TrainDispatch
) -> None:
    """Padding a batch up to a length bucket adds steps with no label, no cell and no
    load-balancing weight, after every real step of the causal decoder: the trainer's
    losses and every parameter's gradient stay as they were (float64)."""
    model.train()
    use_moe_dispatch(model, moe)
    specials = special_ids(model.cfg.decoder)
    plain = collate(examples, **specials)
    want_losses, want_grads = _update_grads(model, plain)
    natural = plain["input_ids"].shape[1]
    for bucket in (64, 256):
        padded = collate(examples, **specials, bucket=bucket)
        length = padded["input_ids"].shape[1]
        assert length % bucket == 0 and length > natural
        assert torch.equal(padded["labelled"], plain["labelled"])
        assert torch.equal(padded["labels"][:, :natural], plain["labels"])
        assert (padded["labels"][:, natural:] == IGNORE).all()
        assert padded["balanced"].sum(dim=1).tolist() == [natural] * len(examples)
        losses, grads = _update_grads(model, padded)
        for name, value in want_losses.items():
            torch.testing.assert_close(losses[name], value, rtol=1e-12, atol=0, msg=name)
        assert grads.keys() == want_grads.keys()
        for name, grad in want_grads.items():
            # Routers run in fp32 whatever the model's dtype (MoE.route): their weight's
            # gradient sums over every step, padding's zeros included, in fp32.
            tol = (1e-5, 1e-9) if name.endswith("router.weight") else (1e-9, 1e-15)
            torch.testing.assert_close(grads[name], grad, rtol=tol[0], atol=tol[1], msg=name)
    use_moe_dispatch(model, "grouped")
