"""The reference-comparison benchmark's CPU smoke run (``benchmarks/reference_speed.py``).

Needs the public reference code in ``.ref/deepseek-ocr/`` and its ``easydict`` (installed
or as a wheel in ``.whl/ref/``), both put there by ``tools/fetch_reference.sh``; without
them the tests skip. The reference code is never part of the repository.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks.reference_speed import (
    ENCODER_DIR,
    REF_DIR,
    REF_WHEELS,
    ReferenceEncoder,
    copy_weights,
    load_reference,
    main,
    perturb,
    smoke_config,
)
from opticmem.encoder.errors import CheckpointError
from opticmem.encoder.model import build_model

HAVE_EASYDICT = importlib.util.find_spec("easydict") is not None or any(
    REF_WHEELS.glob("easydict-*.whl")
)
pytestmark = pytest.mark.skipif(
    not (REF_DIR / ENCODER_DIR).is_dir() or not HAVE_EASYDICT,
    reason="reference code not fetched: run tools/fetch_reference.sh (needs "
    f"{REF_DIR / ENCODER_DIR} and easydict or its wheel in {REF_WHEELS})",
)


def test_smoke_run_agrees_with_the_reference_and_writes_a_table(tmp_path: Path) -> None:
    out = tmp_path / "ref.md"
    assert main(["--smoke", "--out", str(out)]) == 0  # 1 if the outputs disagree
    text = out.read_text()
    assert "| tiny | float32 |" in text and "| small | float32 |" in text
    assert "**NO**" not in text
    assert "| tiny | 1 |" in text and "| small | 2 |" in text
    assert "ours best ÷ ref per-page" in text and "reference_decode_speed.py" in text


def test_weight_copy_is_strict() -> None:
    cfg = smoke_config()
    ref = ReferenceEncoder(load_reference(), cfg)
    deeper = replace(cfg, sam=replace(cfg.sam, depth=3))  # one SAM block the reference lacks
    ours = build_model(deeper, seed=0)
    with pytest.raises(CheckpointError, match=r"sam\.blocks\.2"):
        copy_weights(ours.vision, ref)
    wider = replace(cfg, sam=replace(cfg.sam, width=96, heads=2))  # every SAM shape differs
    with pytest.raises(CheckpointError, match="shape"):
        copy_weights(build_model(wider, seed=0).vision, ref)
    same = build_model(cfg, seed=0).vision
    perturb(same)  # rel-pos tables are zero-initialised on both sides otherwise
    assert copy_weights(same, ref) == sum(1 for _ in ref.parameters())
    theirs, mine = ref.state_dict(), same.state_dict()
    assert torch.equal(theirs["projector.layers.weight"], mine["projector.weight"])
    rel = mine["sam.blocks.1.attn.rel_pos_h"]
    assert rel.abs().max() > 0 and torch.equal(theirs["sam_model.blocks.1.attn.rel_pos_h"], rel)
