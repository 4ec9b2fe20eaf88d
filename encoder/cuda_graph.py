"""Decoding steps as CUDA graphs: one replay instead of hundreds of kernel launches.

Eager decoding launches every kernel of every layer from Python, one token at a time; on a
GPU the step then costs what the host spends launching, not what the GPU spends computing.
A CUDA graph records the launches of one step once and replays them with a single call.
For that, every shape and every address of the step must be fixed, so
:class:`GraphedStep` runs the decoder on

* static input buffers — the step's input embeddings (B, 1, D) and positions (B, 1) are
  copied into them before each replay;
* a pinned KV cache (:meth:`~opticmem.encoder.decoder.KVCache.pin`): keys and values are
  written at a column held in a device tensor, and attention reads a fixed ``width`` of
  columns under a key mask (pads and columns not yet written are masked out) instead of
  exactly the filled ones. A graph is recorded per width; when the sequence outgrows one,
  the next, ``width_step`` columns wider, is recorded and the old one dropped;
* a MoE dispatch without host syncs (``gather``/``dense``; ``auto`` picks them while a
  graph is being captured).

Outside the graph each step costs four small copies and the replay. Recording a width
costs one eager warm-up step and one capture.

On CPU the same fixed-shape step runs eagerly, no graph: that is what the tests compare,
token for token, with the ordinary step (:func:`~opticmem.encoder.generate.generate` with
``GenerationConfig(cuda_graphs=True)``).

:class:`GraphedFunction` does the same for any fixed-shape function, such as the layout
aligner's per-step read-out (:class:`~opticmem.encoder.ocr.AlignerFeed`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from opticmem.encoder.decoder import KVCache, MoEDecoder


class GraphedStep:
    """``step(x (B, 1, D), positions (B, 1)) -> logits (B, V)`` for one decoding position.

    ``key_valid`` (B, L) marks which of the ``L = cache.length`` cached columns are real
    keys (False at left padding); every column written by a step is valid from then on.
    The returned logits live in a buffer that the next call overwrites.
    """

    def __init__(
        self, decoder: MoEDecoder, cache: KVCache, key_valid: Tensor, width_step: int = 256
    ) -> None:
        if width_step < 1:
            raise ValueError(f"width_step must be ≥ 1, got {width_step}")
        B, filled = key_valid.shape
        if filled != cache.length:
            raise ValueError(f"key_valid covers {filled} columns, the cache holds {cache.length}")
        device = key_valid.device
        dtype = cache.keys[0].dtype
        self.decoder = decoder
        self.cache = cache
        self.width_step = width_step
        self.valid = torch.zeros(B, cache.capacity, dtype=torch.bool, device=device)
        self.valid[:, :filled] = key_valid
        self.column = torch.zeros(1, dtype=torch.long, device=device)
        self.x = torch.zeros(B, 1, decoder.cfg.hidden_size, dtype=dtype, device=device)
        self.positions = torch.zeros(B, 1, dtype=torch.long, device=device)
        self.use_graphs = device.type == "cuda"
        self.captures = 0
        """Graphs recorded so far (one per width reached)."""
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_width = 0
        self._logits: Tensor | None = None

    def width(self, end: int) -> int:
        """Columns attention reads when ``end`` are filled: ``end`` rounded up to a multiple
        of ``width_step``, at most the capacity."""
        return min(self.cache.capacity, -(-end // self.width_step) * self.width_step)

    def __call__(self, x: Tensor, positions: Tensor) -> Tensor:
        column = self.cache.length
        if column >= self.cache.capacity:
            raise RuntimeError(f"KV cache full: capacity {self.cache.capacity}")
        self.valid[:, column] = True
        self.column.fill_(column)
        self.x.copy_(x)
        self.positions.copy_(positions)
        width = self.width(column + 1)
        if not self.use_graphs:
            logits = self._forward(width)
        else:
            if width != self._graph_width:
                self._record(width)
            assert self._graph is not None and self._logits is not None
            self._graph.replay()
            logits = self._logits
        self.cache.advance(1)
        return logits

    def _forward(self, width: int) -> Tensor:
        """The fixed-shape step on the static buffers (what a graph records)."""
        length = self.cache.length
        self.cache.pin(self.column, width)
        try:
            mask = self.valid[:, None, None, :width]  # (B, 1, 1, width)
            hidden = self.decoder(self.x, self.positions, mask, self.cache)  # (B, 1, D)
            return self.decoder.logits(hidden[:, -1])  # (B, V)
        finally:
            self.cache.pin(None)
            self.cache.length = length  # the decoder advanced it; __call__ does that once

    def _record(self, width: int) -> None:
        # The narrower graph is never needed again: release it (and its memory) first.
        self._graph, self._logits, self._graph_width = None, None, 0
        device = self.valid.device
        # Warm up on a side stream, as torch.cuda.graphs recommends (lazy initialisation must
        # not happen during capture). The warm-up writes this step's keys and values; the
        # replay that follows writes the same values to the same column again.
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            self._forward(width)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = self._forward(width)
        self._graph, self._logits, self._graph_width = graph, logits, width
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
