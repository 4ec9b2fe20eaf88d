"""Decoding steps as CUDA graphs: one replay instead of hundreds of kernel launches.

Eager decoding launches every kernel of every layer from Python, one token at a time; on a
GPU the step then costs what the host spends launching, not what the GPU spends computing.
A CUDA graph records the launches of one step once and replays them with a single call.
For that, every shape and every address of the step must be fixed, so
:class:`GraphedStep` runs the decoder on

* a static input buffer — the step's input embeddings (B, 1, D) are copied into it
  before each replay;
* a pinned KV cache (:meth:`~opticmem.encoder.decoder.KVCache.pin`): each row writes its
  key and value at its own column, held in a device tensor that the graph advances, and
  attention reads a fixed ``width`` of columns under a key mask computed from those
  columns (pads and columns not written yet are masked out). A graph is recorded per
  width, ``width_step`` columns apart, and kept: with continuous batching the longest
  row, which sets the width, changes as rows finish and start;
* a MoE dispatch without host syncs (``gather``/``dense``; ``auto`` picks them while a
  graph is being captured).

Outside the graph each step costs one copy and the replay. Recording a width
costs one eager warm-up step and one capture.

On CPU the same fixed-shape step runs eagerly, no graph: that is what the tests compare,
token for token, with the ordinary step (:func:`~opticmem.encoder.generate.generate` with
``GenerationConfig(cuda_graphs=True)``).

:class:`GraphedFunction` does the same for any fixed-shape function, such as the layout
aligner's per-step read-out (:class:`~opticmem.encoder.ocr.AlignerFeed`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from opticmem.encoder.decoder import KVCache, MoEDecoder


class GraphedStep:
    """``step(x (B, 1, D)) -> logits (B, V)``: one decoding position for every row, each row
    at its own cache column.

    Row ``b`` reads the columns ``first[b] … column[b]`` (left padding before them) and
    writes its new key and value at ``column[b]``; its position is ``column[b] − first[b]``.
    Every call advances every row by one column (a row at the last column stays there:
    the caller stops rows before that matters). :meth:`start_rows` points rows at the
    end of a freshly loaded prompt, so a batch can start new sequences while others run
    (continuous batching). The returned logits live in a buffer that a later call with
    the same attention width overwrites.
    """

    def __init__(self, decoder: MoEDecoder, cache: KVCache, width_step: int = 256) -> None:
        if width_step < 1:
            raise ValueError(f"width_step must be ≥ 1, got {width_step}")
        device = cache.keys[0].device
        B = cache.batch
        self.decoder = decoder
        self.cache = cache
        self.width_step = width_step
        self.first = torch.zeros(B, dtype=torch.long, device=device)
        self.column = torch.zeros(B, dtype=torch.long, device=device)
        self._host_column = np.zeros(B, dtype=np.int64)  # the host's copy, for the width
        self.x = torch.zeros(B, 1, decoder.cfg.hidden_size, dtype=cache.keys[0].dtype,
                             device=device)
        self.use_graphs = device.type == "cuda"
        self.captures = 0
        """Graphs recorded so far (one per attention width reached)."""
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, Tensor]] = {}

    def start_rows(
        self, rows: Sequence[int], length: int | Sequence[int], first: int | Sequence[int] = 0
    ) -> None:
        """``rows`` hold prompts in columns ``first … length − 1`` (per row, or one value for
        all): their next step writes at column ``length``."""
        index = np.asarray(list(rows), dtype=np.int64)
        ends = np.broadcast_to(np.asarray(length, dtype=np.int64), index.shape)
        starts = np.broadcast_to(np.asarray(first, dtype=np.int64), index.shape)
        if index.size and (ends.max() >= self.cache.capacity or (starts >= ends).any()):
            raise ValueError(
                f"prompts must fill columns first … length − 1 with length < {self.cache.capacity}"
            )
        self._host_column[index] = ends
        device = self.column.device
        at = torch.from_numpy(index).to(device)
        self.column[at] = torch.from_numpy(ends.copy()).to(device)
        self.first[at] = torch.from_numpy(starts.copy()).to(device)

    def width(self, end: int) -> int:
        """Columns attention reads when ``end`` are filled: ``end`` rounded up to a multiple
        of ``width_step``, at most the capacity."""
        return min(self.cache.capacity, -(-end // self.width_step) * self.width_step)

    def __call__(self, x: Tensor) -> Tensor:
        width = self.width(int(self._host_column.max()) + 1)
        self.x.copy_(x)
        if not self.use_graphs:
            logits = self._forward(width)
        else:
            if width not in self._graphs:
                self._record(width)
            graph, logits = self._graphs[width]
            graph.replay()
        np.minimum(self._host_column + 1, self.cache.capacity - 1, out=self._host_column)
        return logits

    def _forward(self, width: int) -> Tensor:
        """The fixed-shape step on the static buffers (what a graph records)."""
        length = self.cache.length
        column = self.column[:, None]  # (B, 1)
        cols = torch.arange(width, device=column.device)[None]  # (1, width)
        mask = ((cols >= self.first[:, None]) & (cols <= column))[:, None, None]  # (B,1,1,W)
        self.cache.pin(self.column, width)
        try:
            hidden = self.decoder(self.x, column - self.first[:, None], mask, self.cache)
            logits = self.decoder.logits(hidden[:, -1])  # (B, V)
        finally:
            self.cache.pin(None)
            self.cache.length = length  # columns are per row here, not the cache's length
        self.column.add_(1).clamp_(max=self.cache.capacity - 1)
        return logits

    def _record(self, width: int) -> None:
        device = self.column.device
        # Warm up on a side stream, as torch.cuda.graphs recommends (lazy initialisation must
        # not happen during capture). The warm-up writes this step's keys and values, which
        # the replay writes again, and advances the columns, which are put back.
        columns = self.column.clone()
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            self._forward(width)
        torch.cuda.current_stream(device).wait_stream(side)
        self.column.copy_(columns)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = self._forward(width)
        self._graphs[width] = (graph, logits)
        self.captures += 1


class GraphedFunction:
    """``fn(*inputs) -> Tensor`` recorded once as a CUDA graph for fixed input shapes.

    Each call copies its arguments into the recorded inputs and replays; the result lives
    in a buffer that the next call overwrites. ``fn`` must be a pure function of its inputs
    and of tensors that keep their address (parameters, a fixed page grid). On CPU, or
    with ``enabled=False``, it is a plain call.
    """

    def __init__(
        self, fn: Callable[..., Tensor], *example: Tensor, enabled: bool = True
    ) -> None:
        self.fn = fn
        self.enabled = enabled and all(t.device.type == "cuda" for t in example)
        self.inputs = [t.clone() for t in example] if self.enabled else []
        self._graph: torch.cuda.CUDAGraph | None = None
        self._output: Tensor | None = None

    def __call__(self, *args: Tensor) -> Tensor:
        if not self.enabled:
            return self.fn(*args)
        for buffer, arg in zip(self.inputs, args, strict=True):
            buffer.copy_(arg)
        if self._graph is None:
            device = self.inputs[0].device
            side = torch.cuda.Stream(device=device)  # warm-up off the capture, as for steps
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                self.fn(*self.inputs)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._output = self.fn(*self.inputs)
            self._graph = graph
        self._graph.replay()
        assert self._output is not None
        return self._output
