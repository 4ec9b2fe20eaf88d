"""How much of a page can be read back from one vision token? A probe of the bundled codec.

The shipped codec's precision falls with the characters packed into each vision token
(Large ~14, Base ~22, Small ~56, Tiny ~88). Either the encoder does not pack them (the
token does not hold them) or the reader does not unpack them (the aligner's per-point
path is a single 128-wide GELU layer before the decoder). This probe separates the two:
with the encoder frozen, it trains two classifiers of the character in each cell from
the vision token over that cell plus the cell's offset inside it — one as narrow as the
aligner's per-point path, one a wide two-hidden-layer MLP — and reports each one's
accuracy on held-out pages. A wide probe far above the narrow one says the information
is in the token and the reader is the limit; both near the codec's precision say the
encoder is.

Usage: python tools/probe_tokens.py --tier small --pages 1500 --minutes 12 --out FILE
(CPU; writes a markdown table to --out and prints it).
"""

from __future__ import annotations

import argparse
import collections
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from opticmem.encoder import synth
from opticmem.encoder.align import AlignConfig, cell_centres
from opticmem.encoder.checkpoint import load_checkpoint
from opticmem.encoder.codec import weights_dir
from opticmem.encoder.model import OCRModel
from opticmem.encoder.preprocess import normalise_pixels
from opticmem.render import RenderSettings, Tier, draw_page, to_tier
from opticmem.render.layout import transcript_positions

CLASSES = 254  # most frequent characters; then "other" and "second cell of a wide one"


def cell_labels(transcript: str, rows: int, cols: int) -> dict[tuple[int, int], str]:
    """The character drawn in each inked cell (``"\\x00"`` for a wide one's second cell)."""
    pos = transcript_positions(transcript)
    out: dict[tuple[int, int], str] = {}
    for i, ch in enumerate(transcript):
        if ch in " \n":
            continue
        r, c = int(pos[i, 0]), int(pos[i, 1])
        if r < rows and c < cols:
            out[(r, c)] = ch
            if pos[i + 1, 0] == r and pos[i + 1, 1] - c == 2 and c + 1 < cols:
                out[(r, c + 1)] = "\x00"
    return out


def collect(model: OCRModel, tier: Tier, pages: int, seed: int) -> list[tuple[torch.Tensor, dict]]:
    """``pages`` pages of the training stream at ``tier``: (token grid, cell labels)."""
    settings = RenderSettings()
    stream = synth.page_stream(seed, "train", settings, pseudo_rate=0.2, symbol_rate=0.2)
    out = []
    batch: list = []
    with torch.inference_mode():
        for _ in range(pages):
            page = next(stream)
            batch.append((np.asarray(to_tier(draw_page(page), tier)),
                          cell_labels(page.transcript, settings.rows, settings.columns)))
            if len(batch) == 16:
                out += _encode(model, batch)
                batch = []
        if batch:
            out += _encode(model, batch)
    return out


def _encode(model: OCRModel, batch: list) -> list:
    pixels = normalise_pixels(torch.from_numpy(np.stack([b[0] for b in batch])))
    grid = model.encode_grid(pixels).float()
    return [(grid[i].clone(), b[1]) for i, b in enumerate(batch)]


def samples(data: list, vocab: dict[str, int], settings: RenderSettings
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(token features, cell offsets, classes) of every inked cell."""
    feats, offs, ys = [], [], []
    cfg = AlignConfig(ahead=1, below=0)
    for grid, labels in data:
        g = grid.shape[0]
        cells = torch.tensor(list(labels), dtype=torch.long)
        xy, _ = cell_centres(cells, settings, cfg)
        gx, gy = xy[:, 0, 0] * g, xy[:, 0, 1] * g
        tx, ty = gx.floor().long(), gy.floor().long()
        feats.append(grid[ty, tx])
        offs.append(torch.stack([gx - tx, gy - ty], dim=-1))
        ys.append(torch.tensor([vocab.get(ch, CLASSES) if ch != "\x00" else CLASSES + 1
                                for ch in labels.values()]))
    return torch.cat(feats), torch.cat(offs), torch.cat(ys)


class Probe(nn.Module):
    """Character of a cell from its vision token and its offset inside the token."""

    def __init__(self, dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        layers: list[nn.Module] = []
        width = dim + 12
        for h in hidden:
            layers += [nn.Linear(width, h), nn.GELU()]
            width = h
        layers.append(nn.Linear(width, CLASSES + 2))
        self.net = nn.Sequential(*layers)

    def forward(self, feat: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
        ang = 2 * math.pi * off.unsqueeze(-1) * torch.tensor([1.0, 2.0, 4.0])
        four = torch.cat([ang.sin(), ang.cos()], dim=-1).flatten(-2)
        return self.net(torch.cat([self.norm(feat), four], dim=-1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tier", default="small")
    ap.add_argument("--pages", type=int, default=1500)
    ap.add_argument("--test-pages", type=int, default=150)
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    tier = Tier(args.tier)
    torch.manual_seed(0)
    model = load_checkpoint(weights_dir(), device="cpu")
    t0 = time.time()
    train = collect(model, tier, args.pages, seed=101)
    test = collect(model, tier, args.test_pages, seed=202)
    encode_s = time.time() - t0
    counts = collections.Counter(ch for _, lab in train for ch in lab.values() if ch != "\x00")
    vocab = {ch: i for i, (ch, _) in enumerate(counts.most_common(CLASSES))}
    settings = RenderSettings()
    xf, xo, y = samples(train, vocab, settings)
    tf, to, ty = samples(test, vocab, settings)
    probes = {"narrow (aligner-like: 128, one GELU)": Probe(xf.shape[1], (128,)),
              "wide (1024, 1024)": Probe(xf.shape[1], (1024, 1024))}
    opts = {k: torch.optim.AdamW(p.parameters(), lr=1e-3) for k, p in probes.items()}
    loss_fn = nn.CrossEntropyLoss()
    deadline = time.time() + args.minutes * 60
    seen = 0
    gen = torch.Generator().manual_seed(0)
    while time.time() < deadline:
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), 4096):
            idx = order[start:start + 4096]
            for name, probe in probes.items():
                opts[name].zero_grad()
                loss_fn(probe(xf[idx], xo[idx]), y[idx]).backward()
                opts[name].step()
            seen += len(idx)
            if time.time() >= deadline:
                break
    rows = [f"# Token probe: {tier.value} ({tier.grid}×{tier.grid} tokens)", "",
            f"{len(train)} training pages ({len(y):,} inked cells), {len(test)} held-out "
            f"pages ({len(ty):,} cells), {seen / len(y):.2f} epochs, "
            f"{args.minutes:g} min of probe training, encoding took {encode_s:.0f} s.", "",
            "| probe | held-out cell accuracy | letters | digits |", "|---|---|---|---|"]
    inv = {i: ch for ch, i in vocab.items()}
    letter = torch.tensor([inv.get(int(c), "").isalpha() for c in ty])
    digit = torch.tensor([inv.get(int(c), "").isdigit() for c in ty])
    with torch.no_grad():
        for name, probe in probes.items():
            pred = torch.cat([probe(tf[i:i + 8192], to[i:i + 8192]).argmax(-1)
                              for i in range(0, len(ty), 8192)])
            ok = (pred == ty).float()
            rows.append(f"| {name} | {ok.mean():.1%} | {ok[letter].mean():.1%} | "
                        f"{ok[digit].mean():.1%} |")
    text = "\n".join(rows) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
