"""Fused inference weights that *are* the module parameters (views, not copies).

The checkpoint layout keeps separate ``q_proj``/``k_proj``/``v_proj``, ``gate_proj``/
``up_proj`` and per-expert matrices; inference is faster with them concatenated (one
matmul instead of three, one batched matmul over experts). :class:`PackedWeights`
concatenates a group of same-width parameters once into a single tensor and re-points each
parameter at its slice of it, so the parameters stay the source of truth (state dicts,
optimisers and in-place loading see and update the same memory) with no second copy.

If anything later swaps a parameter's storage (``module.to(...)``, ``load_state_dict(...,
assign=True)``), the slices no longer match and the next :meth:`PackedWeights.get` repacks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PackedWeights:
    """The ``weight`` parameters of ``rows[i][j]`` packed into one tensor.

    Each row's weights are concatenated along dim 0; rows are stacked along a new leading
    dim, ``(len(rows), Σ_j dim0, …)``, or with ``stacked=False`` the single row gives
    ``(Σ_j dim0, …)``. Modules, not parameters, are held: ``.to()``/``to_empty()`` may
    replace a module's parameter object.
    """

    def __init__(self, rows: list[list[nn.Module]], stacked: bool) -> None:
        self.modules = rows
        self.stacked = stacked
        self._packed: Tensor | None = None
        self._signature: tuple[object, ...] = ()
        self._versions = 0
        self._ends = (rows[0][0], rows[-1][-1])

    @property
    def rows(self) -> list[list[Tensor]]:
        return [[_weight(m) for m in row] for row in self.modules]

    def get(self) -> Tensor:
        """The packed tensor, (re)built if any parameter no longer views it.

        The per-call check is cheap because it runs on every decoding step: the identity and
        storage of the first and last weight — a change of dtype, device or storage (``.to``,
        ``load_state_dict(assign=True)``) always replaces those too — and the sum of the
        weights' version counters, so an in-place change to any one of them (an optimiser
        step, ``mul_`` on one expert) bumps the packed tensor's version as well.
        """
        if self._packed is None or self._signature != self._current_signature():
            self._packed = self._pack()
            if not self._intact(self._packed):  # pragma: no cover - _pack guarantees it
                raise RuntimeError("packed weights do not view their parameters")
            self._signature = self._current_signature()
            self._versions = self._parameter_versions()
        versions = self._parameter_versions()
        if versions != self._versions:
            # A parameter re-pointed by ``.data =`` keeps its own version counter, so an
            # in-place change to it leaves the packed tensor's version as it was: pass the
            # change on, so what keys on that version (fp16 copies) sees it.
            torch.autograd.graph.increment_version(self._packed)
            self._versions = versions
        return self._packed

    def _parameter_versions(self) -> int:
        """The sum of the weights' in-place change counts: it grows with any change."""
        return sum(_weight(m)._version for row in self.modules for m in row)

    def _current_signature(self) -> tuple[object, ...]:
        first = _weight(self._ends[0])
        last = _weight(self._ends[1])
        return (id(first), first.data_ptr(), first.dtype, first.device,
                id(last), last.data_ptr())

    def _slices(self, packed: Tensor) -> list[list[Tensor]]:
        out = []
        for i, row in enumerate(self.modules):
            base = packed[i] if self.stacked else packed
            start, parts = 0, []
            for m in row:
                n = _weight(m).shape[0]
                parts.append(base[start : start + n])
                start += n
            out.append(parts)
        return out

    def _intact(self, packed: Tensor) -> bool:
        rows = self.rows
        first = rows[0][0]
        if first.dtype != packed.dtype or first.device != packed.device:
            return False
        for row, parts in zip(rows, self._slices(packed), strict=True):
            for p, view in zip(row, parts, strict=True):
                if p.data_ptr() != view.data_ptr():
                    return False
        return True

    def _pack(self) -> Tensor:
        # Outside inference mode: a parameter cannot take an inference tensor as its data.
        with torch.inference_mode(False), torch.no_grad():
            rows = self.rows
            cat = [torch.cat([p.detach() for p in row], dim=0) for row in rows]
            packed = torch.stack(cat) if self.stacked else cat[0]
            for row, parts in zip(rows, self._slices(packed), strict=True):
                for p, view in zip(row, parts, strict=True):
                    p.data = view
        return packed


def _weight(module: nn.Module) -> Tensor:
    # The parameter dict first: nn.Module.__getattr__ is slow, and this runs every step.
    weight: Tensor | nn.Module | None = module._parameters.get("weight")
    if weight is None:
        weight = module.weight
    if not isinstance(weight, Tensor):
        raise TypeError(f"{type(module).__name__}.weight is not a tensor")
    return weight


def needs_grad(params: list[nn.Parameter] | list[Tensor]) -> bool:
    """True when autograd would track these parameters now (training path)."""
    return torch.is_grad_enabled() and any(p.requires_grad for p in params)
