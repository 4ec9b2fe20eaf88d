"""The bundled codec: where its files live, and the aligned forward pass it trains with.

The shipped model is the ``bundled`` preset of :class:`~opticmem.encoder.model.OCRModel`
with a layout aligner, trained on our renderer's pages (``opticmem train``). Its weights,
config and tokenizer sit in the package under ``encoder/weights/``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from opticmem.encoder.codec import CodecError, weights_dir
from opticmem.encoder.config import DecoderConfig
from opticmem.encoder.examples import IGNORE
from opticmem.encoder.model import OCRModel
from opticmem.encoder.preprocess import normalise_pixels
from opticmem.render import RenderSettings

if TYPE_CHECKING:
    from opticmem.encoder.ocr import OCRCodec


BUNDLED_TOKENIZER = weights_dir() / "tokenizer.json"


def labelled_steps(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """``(rows, positions)`` of the labelled steps in row-major order: ``batch["labelled"]``
    as :func:`~opticmem.encoder.examples.collate` made it on the host, else found on the
    device (which waits for it)."""
    steps = batch.get("labelled")
    if steps is None:
        steps = (batch["labels"] != IGNORE).nonzero()
    return steps[:, 0], steps[:, 1]


def aligned_embeds(
    model: OCRModel, grid: Tensor, cells: Tensor, rows: Tensor, positions: Tensor,
    settings: RenderSettings,
) -> tuple[Tensor | None, Tensor | None]:
    """Aligner embeddings at the steps ``(rows, positions)``: ``(B, T, D)`` with zeros
    elsewhere (``T`` = ``cells.shape[1]``), and the ``(N, D)`` embeddings themselves;
    ``(None, None)`` for a model without aligner.

    The aligner reads through :meth:`~opticmem.encoder.align.LayoutAligner.prepare` and
    ``read``, as decoding does: the vision tokens are normalised and projected once per
    token, then gathered per step, rather than gathered per step and then projected.
    """
    if model.aligner is None:
        return None, None
    prepared = model.aligner.prepare(grid, settings)
    embeds = model.aligner.read(prepared, cells[rows, positions], rows)
    out = grid.new_zeros(*cells.shape[:2], grid.shape[-1])
    out[rows, positions] = embeds.to(out.dtype)
    return out, embeds


@dataclass
class StepOutput:
    """Logits and targets of every labelled position, and of the aligner read-out."""

    logits: Tensor  # (N, V)
    labels: Tensor  # (N,)
    readout: Tensor | None  # (N', V): next token from the aligner alone, or None


def training_step(
    model: OCRModel, batch: dict[str, Tensor], settings: RenderSettings
) -> StepOutput:
    """Teacher-forced forward pass.

    ``batch`` is :func:`~opticmem.encoder.examples.collate` output on the model's device:
    the vision slots sit at positions ``1 … S`` of every row. Logits are computed only where
    there is a label (the LM head is the largest matmul). The read-out predicts each aligned
    step's token from the aligner output alone, through the decoder's final norm and LM
    head: with no text context on that path, the only way to lower its loss is to read the
    page, which is the signal a from-scratch decoder otherwise ignores in favour of its
    language prior.

    Nothing here asks the device for a value (with ``batch["labelled"]`` given), so on a
    GPU the host queues the next step's work while this one runs.
    """
    pixels = normalise_pixels(batch["images"], next(model.parameters()).dtype)
    grid = model.encode_grid(pixels)  # (B, g, g, D)
    slots = model.grid_to_slots(grid)  # (B, S, D)
    rows, positions = labelled_steps(batch)
    extra, aligned = aligned_embeds(model, grid, batch["cells"], rows, positions, settings)
    tokens = model.decoder.embed_tokens(batch["input_ids"])  # (B, L, D)
    # The slots replace the <image> ids at 1 … S (collate's layout) without the general
    # embed_inputs' count check, which would read the count back from the device.
    x = torch.cat([tokens[:, :1], slots.to(tokens.dtype), tokens[:, 1 + slots.shape[1]:]], dim=1)
    if extra is not None:
        x = x + extra.to(x.dtype)
    hidden = model.decoder(x, balanced=batch.get("balanced"))  # (B, L, D)
    readout = None
    if aligned is not None:
        # aligned steps are exactly the labelled ones (see examples.collate)
        readout = model.decoder.logits(model.decoder.norm(aligned))
    return StepOutput(model.decoder.logits(hidden[rows, positions]),
                      batch["labels"][rows, positions], readout)


def special_ids(d: DecoderConfig) -> dict[str, int]:
    """Keyword arguments for :func:`~opticmem.encoder.examples.collate`, from a decoder's
    config (a model's ``cfg.decoder``, or a preset's without building the model)."""
    return {"bos": d.bos_token_id, "eos": d.eos_token_id, "pad": d.pad_token_id,
            "image_id": d.image_token_id}


@torch.no_grad()
def teacher_forced_accuracy(
    model: OCRModel, batch: dict[str, Tensor], settings: RenderSettings
) -> float:
    """Share of labelled tokens the model predicts right given the true prefix."""
    out = training_step(model, batch, settings)
    return float((out.logits.argmax(-1) == out.labels).float().mean())


class BundledWeightsError(CodecError, FileNotFoundError):
    """The packaged weights are missing or unreadable; names the file. A
    :class:`~opticmem.encoder.codec.CodecError` like every error of the codec's weights,
    and an ``OSError``, as a missing file is."""


def export_bundled(
    state_model_dir: Path, out_dir: Path, *, quantize: Literal["int8"] | None = None
) -> Path:
    """Write a trained model as shippable bf16 shards (≤ 16 MiB each) plus its tokenizer.

    ``quantize="int8"`` stores the weight matrices as int8 with per-row scales instead
    (:func:`~opticmem.encoder.checkpoint.save_checkpoint`): half the bytes, room in the
    package's 48 MiB for twice the parameters, within noise of bf16 for the shipped model
    (``benchmarks/results/codec_eval_int8/``). Training resumes from either."""
    import shutil

    from opticmem.encoder.checkpoint import load_checkpoint, save_checkpoint

    model = load_checkpoint(state_model_dir, device="cpu", dtype=torch.float32)
    save_checkpoint(model, out_dir, dtype=torch.bfloat16, quantize=quantize)
    shutil.copyfile(BUNDLED_TOKENIZER, out_dir / "tokenizer.json")
    return out_dir


def load_bundled_codec(
    directory: Path | None = None, *, device: str | torch.device | None = None
) -> OCRCodec:
    """The shipped codec (weights in the package), on CUDA when available, else CPU.

    On CUDA it decodes with CUDA graphs (``GenerationConfig.cuda_graphs``): one graph
    launch per step instead of hundreds of kernel launches; and continuously
    (``OCRCodec.continuous``): a row whose page ends takes the next page at once.

    Raises :class:`BundledWeightsError` naming the missing or corrupt file.
    """
    from opticmem.encoder.checkpoint import CONFIG_FILE, INDEX_FILE, refuse_pickles
    from opticmem.encoder.errors import CheckpointError
    from opticmem.encoder.ocr import OCRCodec

    root = Path(directory) if directory is not None else weights_dir()
    hint = ("reinstall opticmem, or pass codec=None to run without a model" if directory is None
            else "a checkpoint directory holds what `opticmem train --export` writes")
    # What the path is, before which of its files is missing: a file given for the folder
    # was reported as "codec file missing: x/config.json/config.json", and a folder of
    # pickled weights as missing its index, without saying that they are never read.
    if root.exists() and not root.is_dir():
        raise BundledWeightsError(f"codec directory {root} is a file, not a directory ({hint})")
    try:
        refuse_pickles(root)
    except CheckpointError as exc:
        raise BundledWeightsError(f"codec weights unreadable: {exc}") from exc
    for name in (CONFIG_FILE, INDEX_FILE, "tokenizer.json"):
        if not (root / name).is_file():
            raise BundledWeightsError(f"codec file missing: {root / name} ({hint})")
    try:
        codec = OCRCodec.from_pretrained(root, device=device)
    except CheckpointError as exc:
        raise BundledWeightsError(f"codec weights unreadable: {exc}") from exc
    if codec.device.type == "cuda":
        codec.generation = replace(codec.generation, cuda_graphs=True)
        codec.continuous = True
    return codec
