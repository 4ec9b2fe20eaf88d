"""Sharded safetensors checkpoints: save and strictly load a model of any preset.

A checkpoint directory holds

* ``config.json`` — ``{"format": "opticmem", "model": <ModelConfig.to_dict()>}``;
* ``model.safetensors.index.json`` — ``{"metadata": {...}, "weight_map": {name: shard}}``
  in the layout the Hugging Face hub uses, plus each shard's SHA-256 under
  ``metadata.shards`` so silent corruption is caught;
* ``model-0000i-of-0000n.safetensors`` — shards of at most ``max_shard_bytes`` (a tensor
  larger than that gets a shard of its own).

A checkpoint saved with ``quantize="int8"`` stores each weight matrix as int8 with one
fp32 scale per row (:func:`quantize_int8`); the index's ``metadata.quantization`` names
each such tensor's scale, which sits in the same shard. Loading gives the model back in
floating point. It halves a bf16 checkpoint, which is what lets the bundled codec hold
about twice the parameters within its 48 MiB.

No pickle anywhere: tensors go through ``safetensors`` only. Loading is strict: every
parameter of the model must be present exactly once with the right shape, and every
failure raises :class:`~opticmem.encoder.errors.CheckpointError` naming the file and the
first key that did not fit. :func:`load_tensors` is the shared strict loader, also used
for the official checkpoint (:mod:`opticmem.encoder.official`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from opticmem.encoder.config import ModelConfig
from opticmem.encoder.durable import fsync_path
from opticmem.encoder.errors import CheckpointError, ConfigError, InputError
from opticmem.encoder.model import (
    OCRModel,
    build_model,
    default_dtype,
    resolve_device,
)

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
FORMAT = "opticmem"
DEFAULT_MAX_SHARD_BYTES = 16 * 1024 * 1024
INT8 = "int8-rowwise"
"""``metadata.quantization.format`` of an int8 checkpoint (see :func:`quantize_int8`)."""
SCALE_SUFFIX = ":scale"
"""A quantized tensor's scale is stored under its name plus this (in the same shard)."""
QUANTIZE_MIN_NUMEL = 4096
"""Tensors smaller than this (biases, norms, small tables) stay floating point: their
bytes do not matter and their precision might."""


def quantize_int8(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, scale)``: symmetric int8 with one fp32 scale per row.

    A row is the last axis when it has at least 32 entries (a linear layer's output
    channel, an embedding's token, one position's embedding); otherwise everything
    after the first axis (a convolution's output channel). ``scale`` has the tensor's
    leading shape, and ``values * scale`` (broadcast, :func:`dequantize_int8`) is within
    half a step, ``scale / 2``, of the original.
    """
    t = tensor.detach().float()
    lead = t.shape[:-1] if t.shape[-1] >= 32 else t.shape[:1]
    rows = t.reshape(*lead, -1)
    scale = rows.abs().amax(dim=-1).clamp_min(1e-12) / 127.0
    values = torch.round(rows / scale.unsqueeze(-1)).clamp_(-127, 127).to(torch.int8)
    return values.reshape(t.shape), scale


def float_weights(model: torch.nn.Module) -> set[str]:
    """Names of the tensors an int8 checkpoint of ``model`` keeps in floating point: those
    its modules list in a ``FLOAT_WEIGHTS`` attribute (names relative to the module), whose
    rows int8 with one scale cannot hold (see ``LayoutAligner.FLOAT_WEIGHTS``)."""
    names = set()
    for prefix, module in model.named_modules():
        for local in getattr(module, "FLOAT_WEIGHTS", ()):
            names.add(f"{prefix}.{local}" if prefix else local)
    return names


def dequantize_int8(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The fp32 tensor :func:`quantize_int8` stored as ``(values, scale)``."""
    expand = scale.reshape(*scale.shape, *([1] * (values.ndim - scale.ndim)))
    return values.float() * expand.float()


def save_checkpoint(
    model: OCRModel,
    directory: str | Path,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    dtype: torch.dtype | None = None,
    quantize: Literal["int8"] | None = None,
) -> Path:
    """Write ``model`` as sharded safetensors under ``directory`` (created if needed).

    ``dtype`` casts floating tensors on the way out (e.g. ``torch.bfloat16`` to ship); it
    must be a floating-point ``torch.dtype`` (else :class:`InputError`, raised before
    anything is written: an integer dtype would make a checkpoint no model loads), and
    ``max_shard_bytes`` a whole number ≥ 1; a ``directory`` that is a file, or under one,
    is an :class:`InputError` too. ``quantize="int8"`` stores every floating tensor of at
    least :data:`QUANTIZE_MIN_NUMEL` values and two or more axes as int8 with per-row
    scales (:func:`quantize_int8`), but those of :func:`float_weights`; the rest are cast
    by ``dtype``.
    Returns the directory. Everything is written under temporary names first
    (``.model-….safetensors.partial``), each file synced to the disk, and moved into place
    only once all of it is written, replacing an older save's files then; the folder is
    synced after the renames (:mod:`opticmem.encoder.durable`). A save that fails (a full
    disk), is killed part way or is cut by a power loss leaves the older checkpoint whole.
    """
    if (isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int)
            or max_shard_bytes <= 0):
        raise InputError(f"max_shard_bytes must be a whole number ≥ 1, got {max_shard_bytes!r}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputError(f"dtype must be a floating-point torch.dtype such as torch.bfloat16, "
                         f"got {dtype!r}")
    if quantize not in (None, "int8"):
        raise InputError(f"quantize must be None or 'int8', got {quantize!r}")
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # Python's "File exists" named no cause
        raise InputError(f"cannot save a checkpoint in {out}: a file is there, not a "
                         "directory") from None
    for stale in out.glob(f".*{PARTIAL}"):  # what a save killed part way left
        stale.unlink()

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    total = 0
    scales: dict[str, str] = {}
    keep_float = float_weights(model)
    for name, tensor in model.state_dict().items():
        t = tensor.detach()
        stored = {name: t}
        if (quantize and t.is_floating_point() and t.ndim >= 2
                and t.numel() >= QUANTIZE_MIN_NUMEL and name not in keep_float):
            values, scale = quantize_int8(t)
            stored = {name: values, name + SCALE_SUFFIX: scale}
            scales[name] = name + SCALE_SUFFIX
        elif dtype is not None and t.is_floating_point():
            stored = {name: t.to(dtype)}
        # clone(): expert weights are views of one stacked tensor, and safetensors
        # refuses tensors that share storage.
        stored = {k: v.to("cpu").contiguous().clone() for k, v in stored.items()}
        nbytes = sum(v.numel() * v.element_size() for v in stored.values())
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1].update(stored)  # a tensor and its scale share a shard
        size += nbytes
        total += nbytes

    n = len(shards)
    scale_names = set(scales.values())
    weight_map: dict[str, str] = {}
    digests: dict[str, str] = {}
    staged: list[str] = []  # final names, in the order they are moved into place
    try:
        for i, shard in enumerate(shards, start=1):
            fname = f"model-{i:05d}-of-{n:05d}.safetensors"
            staged.append(fname)
            save_file(shard, str(_partial(out, fname)), metadata={"format": "pt"})
            fsync_path(_partial(out, fname))
            digests[fname] = _sha256(_partial(out, fname))
            weight_map.update(dict.fromkeys((k for k in shard if k not in scale_names), fname))

        metadata: dict[str, Any] = {"format": FORMAT, "total_size": total, "shards": digests}
        if scales:
            metadata["quantization"] = {"format": INT8, "scales": scales}
        index = {"metadata": metadata, "weight_map": weight_map}
        config = {"format": FORMAT, "model": model.cfg.to_dict()}
        for fname, text in ((INDEX_FILE, json.dumps(index, indent=1, sort_keys=True)),
                            (CONFIG_FILE, json.dumps(config, indent=1))):
            staged.append(fname)
            _partial(out, fname).write_text(text)
            fsync_path(_partial(out, fname))
    except BaseException:
        for fname in staged:
            _partial(out, fname).unlink(missing_ok=True)
        raise
    # All written: only renames from here, no byte that a full disk could refuse. The
    # older save's shards that none of these overwrite go last, once the new index is in
    # place: until then the old index still names them.
    for fname in staged:
        _partial(out, fname).replace(out / fname)
    for old in out.glob("model-*-of-*.safetensors"):
        if old.name not in digests:
            old.unlink()
    # The renames (and a folder just made) reach the disk too: each file's bytes were
    # synced above, so after a power loss the folder holds the old save or the new whole.
    fsync_path(out)
    fsync_path(out.parent)
    log.info("saved %s (%d tensors, %d bytes) in %d shard(s) to %s",
             model.cfg.name, len(weight_map), total, n, out)
    return out


PARTIAL = ".partial"
"""Suffix of a file :func:`save_checkpoint` is still writing (its name also starts with a
dot, so no pattern of a checkpoint's files matches it)."""


def _partial(out: Path, fname: str) -> Path:
    return out / f".{fname}{PARTIAL}"


def read_config(directory: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` stored in a checkpoint directory."""
    path = Path(directory) / CONFIG_FILE
    data = _read_json(path)
    if data.get("format") != FORMAT or not isinstance(data.get("model"), dict):
        raise CheckpointError("not an opticmem model config", path=str(path))
    try:
        return ModelConfig.from_dict(data["model"])
    except (ConfigError, TypeError) as exc:
        detail = str(exc).removeprefix("invalid model config: ")  # validate()'s own prefix
        raise CheckpointError(f"invalid model config: {detail}", path=str(path)) from exc


def read_index(directory: str | Path) -> tuple[dict[str, str], dict[str, Any]]:
    """``(weight_map, metadata)`` of a sharded checkpoint's index file. Its shards are
    files of the checkpoint's own folder: a name with a path in it (``../x``,
    ``/etc/passwd``) would have any file on the machine opened as a shard."""
    path = Path(directory) / INDEX_FILE
    data = _read_json(path)
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointError("index has no valid weight_map", path=str(path))
    for key, shard in weight_map.items():
        if shard in ("", ".", "..") or Path(shard).name != shard or "\\" in shard:
            raise CheckpointError(f"{key!r} is in {shard!r}, not a file of the checkpoint's "
                                  "folder", path=str(path))
    meta = data.get("metadata") or {}
    return weight_map, meta if isinstance(meta, dict) else {}


def load_checkpoint(
    directory: str | Path,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    verify: bool = True,
) -> OCRModel:
    """Build the model a checkpoint describes and load its weights strictly.

    ``device`` defaults to CUDA when available, ``dtype`` (a floating-point
    ``torch.dtype``, else :class:`InputError`) to bf16 on CUDA and fp32 on CPU. ``verify``
    checks each shard's SHA-256 against the index first.
    """
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError("checkpoint directory does not exist", path=str(root))
    refuse_pickles(root)
    cfg = read_config(root)
    weight_map, meta = read_index(root)
    dev = resolve_device(device)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputError(f"dtype must be a floating-point torch.dtype such as torch.bfloat16, "
                         f"got {dtype!r}")
    try:
        layout = build_model(cfg, device="meta")  # the config's sizes alone, no memory
    except (TypeError, ValueError, RuntimeError) as exc:
        # config.json parsed but its sizes cannot make tensors (a string, a negative or
        # fractional size): the file is at fault, so say which one.
        raise CheckpointError(f"config describes no model that can be built: {exc}",
                              path=str(root / CONFIG_FILE)) from exc
    if verify:
        verify_shards(root, weight_map, meta)
    scales = quantization_scales(root, weight_map, meta)
    # The shards' names and shapes against the config's, from their headers, before the
    # model is allocated: a config.json whose sizes the weights do not have (a width of
    # 2**20) failed in torch's allocator ("can't allocate memory: 13194139533312 bytes").
    load_tensors(layout, root, weight_map, scales=scales, shapes_only=True)
    # A device that cannot hold it ("mps" where there is none) raises torch's own error.
    model = build_model(cfg, device=dev, dtype=dtype or default_dtype(dev), seed=None)
    load_tensors(model, root, weight_map, scales=scales)
    return model.eval()


def quantization_scales(
    root: Path, weight_map: Mapping[str, str], meta: Mapping[str, Any]
) -> dict[str, str]:
    """``{tensor: its scale's name}`` from an index's ``metadata.quantization`` (empty for
    a checkpoint of floating tensors); a format this version cannot read, or a scale for
    a tensor the weight map lacks, is a :class:`CheckpointError` naming the index."""
    quant = meta.get("quantization")
    if quant is None:
        return {}
    path = str(root / INDEX_FILE)
    if not isinstance(quant, dict) or quant.get("format") != INT8:
        found = quant.get("format") if isinstance(quant, dict) else quant
        raise CheckpointError(f"unsupported metadata.quantization {found!r} (this version "
                              f"reads {INT8!r})", path=path)
    scales = quant.get("scales")
    if not isinstance(scales, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in scales.items()
    ):
        raise CheckpointError("metadata.quantization has no valid scales map", path=path)
    for name in scales:
        if name not in weight_map:
            raise CheckpointError("a scale is recorded for a tensor the weight map lacks",
                                  path=path, key=name)
    return dict(scales)


def verify_shards(root: Path, weight_map: Mapping[str, str], meta: Mapping[str, Any]) -> None:
    """Check each shard of ``weight_map`` under ``root`` against the SHA-256 that
    :func:`save_checkpoint` recorded in the index's ``metadata.shards``; raise
    :class:`CheckpointError` naming the first corrupt shard (a flipped bit in a shard is
    still a readable tensor, so only the digest catches it). A missing shard is left to
    :func:`load_tensors`, which names its first key."""
    digests = meta.get("shards")
    if not isinstance(digests, dict):
        raise CheckpointError("index lacks shard digests", path=str(root / INDEX_FILE))
    for fname in sorted(set(weight_map.values())):
        path = root / fname
        if not path.is_file():
            continue  # reported with its first key by load_tensors
        first = next(k for k, f in weight_map.items() if f == fname)
        if fname not in digests:  # the index is at fault, not the shard
            raise CheckpointError(f"index has no SHA-256 for shard {fname!r} under "
                                  "metadata.shards", path=str(root / INDEX_FILE), key=first)
        if digests[fname] != _sha256(path):
            raise CheckpointError(
                "shard is corrupt (SHA-256 differs from the index)", path=str(path), key=first
            )


def load_tensors(
    model: torch.nn.Module,
    root: Path,
    weight_map: Mapping[str, str],
    rename: Callable[[str], str] | None = None,
    unrename: Callable[[str], str] | None = None,
    scales: Mapping[str, str] | None = None,
    *,
    shapes_only: bool = False,
) -> None:
    """Copy every tensor of a sharded checkpoint into ``model``, strictly.

    ``weight_map`` maps checkpoint names to shard files under ``root``; ``rename`` turns a
    checkpoint name into the model's name (identity by default) and ``unrename`` back, to
    name a missing tensor as the checkpoint would. Every model parameter and buffer must
    be covered exactly once, with the same shape; floating values are cast to the model's
    dtype and device, but a floating parameter never takes an integer or boolean tensor
    (that is a wrong tensor, not a precision) — except an int8 tensor that ``scales``
    names a scale for (:func:`quantization_scales`), which is dequantized first.
    ``shapes_only`` checks the names and shapes (the shards' headers) and copies nothing:
    ``model`` may then be on the meta device.
    """
    index_path = str(root / INDEX_FILE)
    scales = scales or {}
    to_ours = rename or (lambda name: name)
    targets = model.state_dict(keep_vars=True)
    ours_of: dict[str, str] = {}
    claimed: dict[str, str] = {}
    for name in weight_map:
        ours = to_ours(name)
        if ours not in targets:
            raise CheckpointError(
                f"unexpected tensor (maps to {ours!r}, which the model does not have)",
                path=str(root / weight_map[name]),
                key=name,
            )
        if ours in claimed:
            raise CheckpointError(
                f"two tensors map to {ours!r} (also {claimed[ours]!r})",
                path=str(root / weight_map[name]),
                key=name,
            )
        ours_of[name] = ours
        claimed[ours] = name
    for ours in targets:
        if ours not in claimed:
            name = unrename(ours) if unrename is not None else ours
            raise CheckpointError("tensor missing from checkpoint", path=index_path, key=name)

    by_file: dict[str, list[str]] = {}
    for name, fname in weight_map.items():
        by_file.setdefault(fname, []).append(name)
    for fname in sorted(by_file):
        names = by_file[fname]
        path = root / fname
        if why := not_a_file(path):
            raise CheckpointError(f"shard {why}", path=str(path), key=names[0])
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                present = set(f.keys())
                for name in names:
                    if name not in present:
                        raise CheckpointError("tensor not in its shard", path=str(path), key=name)
                    target = targets[ours_of[name]]
                    shape = tuple(f.get_slice(name).get_shape())
                    if shape != tuple(target.shape):
                        raise CheckpointError(
                            f"shape {shape} does not match the model's {tuple(target.shape)}",
                            path=str(path),
                            key=name,
                        )
                    if shapes_only:
                        continue
                    tensor = f.get_tensor(name)
                    if name in scales:
                        tensor = _dequantized(f, present, name, scales[name], tensor, path)
                    if target.is_floating_point() and not tensor.is_floating_point():
                        raise CheckpointError(
                            f"dtype {tensor.dtype} where the model has {target.dtype}",
                            path=str(path),
                            key=name,
                        )
                    with torch.no_grad():
                        target.copy_(tensor.to(device=target.device, dtype=target.dtype))
                    if (isinstance(target, torch.nn.Parameter) and target.is_floating_point()
                            and not bool(torch.isfinite(target).all())):
                        raise CheckpointError(  # (or too large for the model's dtype)
                            "holds NaN or infinite weights: a diverged or damaged "
                            "checkpoint, whose every reading would be NaN",
                            path=str(path), key=name)
        except CheckpointError:
            raise
        except Exception as exc:  # safetensors raises SafetensorError, OSError, ValueError…
            raise CheckpointError(
                f"unreadable safetensors shard: {exc}", path=str(path), key=names[0]
            ) from exc
    if not shapes_only:
        log.info("loaded %d tensors from %d shard(s) in %s", len(weight_map), len(by_file),
                 root)


def _dequantized(f: Any, present: set[str], name: str, scale_name: str,
                 values: torch.Tensor, path: Path) -> torch.Tensor:
    """``values`` (int8) times the scale stored beside it in the open shard ``f``."""
    if values.dtype != torch.int8:
        raise CheckpointError(f"dtype {values.dtype} where an int8 tensor was recorded",
                              path=str(path), key=name)
    if scale_name not in present:
        raise CheckpointError(f"scale {scale_name!r} not in the tensor's shard",
                              path=str(path), key=name)
    scale = f.get_tensor(scale_name)
    if (not scale.is_floating_point() or scale.ndim == 0
            or tuple(scale.shape) != tuple(values.shape[:scale.ndim])):
        raise CheckpointError(
            f"scale {scale_name!r} of shape {tuple(scale.shape)} and dtype {scale.dtype} "
            f"does not fit a tensor of shape {tuple(values.shape)}",
            path=str(path), key=name)
    return dequantize_int8(values, scale)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
"""Weight files in Python's pickle format, which can run code when read: never loaded."""


def refuse_pickles(directory: Path) -> None:
    """Raise :class:`CheckpointError` for a folder without a safetensors index but with
    pickled weights (``pytorch_model.bin``), saying why they are not read: otherwise the
    first complaint would be about its config or its missing index alone."""
    index = directory / INDEX_FILE
    if index.exists():
        return
    try:
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    except (OSError, ValueError):  # ValueError: a NUL in the path, which no OS takes
        return  # _read_json says what is wrong with the folder
    if pickles:
        shown = ", ".join(pickles[:3]) + (" …" if len(pickles) > 3 else "")
        raise CheckpointError(
            f"file missing; the folder has pickle weights ({shown}), which are never loaded "
            "because reading them can run code: convert them to sharded safetensors",
            path=str(index))


def not_a_file(path: Path) -> str | None:
    """Why ``path`` is no regular file to read, said after the file's role ("shard …",
    "tokenizer.json …"), or ``None`` when it is one. A broken symbolic link names its
    target (a hub cache whose blob is gone); a folder or a device is named as such rather
    than as missing (hashing ``/dev/zero`` would never end)."""
    if path.is_file():
        return None
    if path.is_symlink() and not path.exists():
        return f"is a broken symbolic link to {os.readlink(path)} (file missing)"
    if path.is_dir():
        return "is a folder, not a file"
    if path.exists():
        return "is not a regular file (a device, a pipe or a socket)"
    return "file missing"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError("file missing", path=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        # RecursionError: JSON nested past Python's recursion limit.
        raise CheckpointError(f"unreadable JSON: {exc}", path=str(path)) from exc
    if not isinstance(data, dict):
        raise CheckpointError("expected a JSON object", path=str(path))
    return data


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
