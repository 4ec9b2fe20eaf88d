"""The reference-decoder benchmark's CPU smoke run (``benchmarks/reference_decode_speed.py``).

The smoke and config checks need the Hub remote code in ``.ref/deepseek-ocr-hub/`` and its
pinned wheels in ``.ref-wheels/``, both put there by ``tools/fetch_reference.sh``; without
them they skip. The benchmark needs transformers 4.46, so it runs in a subprocess over those wheels,
installed into a temporary folder; the reference code is never part of the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.reference_decode_speed import HUB_DIR, PACKAGE

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / ".ref-wheels"
TAG = f"cp{sys.version_info[0]}{sys.version_info[1]}"

needs_reference = pytest.mark.skipif(
    not (ROOT / HUB_DIR / PACKAGE / "modeling_deepseekv2.py").is_file()
    or not any(WHEELS.glob(f"tokenizers-*{TAG}*.whl")),
    reason="reference decoder not fetched: run tools/fetch_reference.sh (needs "
    f"{HUB_DIR / PACKAGE} and the pinned wheels in .ref-wheels/ for {TAG})",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """transformers 4.46.3 and its pinned companions, installed into a temporary folder."""
    target = tmp_path_factory.mktemp("refhf")
    wheels = [*WHEELS.glob("transformers-*.whl"), *WHEELS.glob("huggingface_hub-*.whl"),
              *WHEELS.glob("einops-*.whl"), *WHEELS.glob(f"tokenizers-*{TAG}*.whl")]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--target", str(target), *map(str, wheels)], check=True)
    return target


def run(site: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=600)


@needs_reference
def test_smoke_run_agrees_with_the_reference_and_writes_the_table(
    site: Path, tmp_path: Path
) -> None:
    out = tmp_path / "decode.md"
    done = run(site, "from benchmarks.reference_decode_speed import main; "
                     f"main(['--smoke', '--out', {str(out)!r}])")
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert "2/2 rows chose the same 6 greedy tokens" in text
    assert "| reference | 1 |" in text and "| ours | 2 |" in text
    assert "ours ÷ reference, same batch" in text and "Ours best ÷ reference per-page" in text


@needs_reference
def test_official_preset_is_the_hub_language_model(site: Path) -> None:
    """Our ``official`` decoder has the Hub config's dims, and the reference built from them
    has exactly our decoder's tensors under the official names (on the meta device)."""
    code = """
import torch
from benchmarks.reference_decode_speed import *
from opticmem.encoder.official import to_official
module, hub = load_reference()
d = preset("official").decoder
assert official_mismatches(hub, d) == [], official_mismatches(hub, d)
ours = build_model(preset("official"), device="meta")
with torch.device("meta"):
    ref = module.DeepseekV2ForCausalLM(reference_config(module, hub, d))
theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
mine = {to_official("decoder." + k): tuple(v.shape) for k, v in ours.decoder.state_dict().items()}
assert theirs == mine, sorted(set(theirs) ^ set(mine))[:5]
print(len(mine), "tensors")
"""
    done = run(site, code)
    assert done.returncode == 0, done.stderr[-2000:]
    count, word = done.stdout.split()[-2:]
    assert word == "tensors" and int(count) > 2000  # 12 layers, 11 of them 64 experts


def test_refuses_a_transformers_other_than_its_pin() -> None:
    import transformers

    from benchmarks.reference_decode_speed import load_reference

    if transformers.__version__.startswith("4.46."):
        pytest.skip("this interpreter has the reference's own transformers")
    with pytest.raises(RuntimeError, match=r"4\.46"):
        load_reference()
