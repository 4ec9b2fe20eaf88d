"""Saves reach the disk: every file written is synced before its rename, and the folders
around the renames after them (:mod:`opticmem.encoder.durable`).

A power loss cannot be staged in a test; what can is the order of the calls the kernel
needs to make a save survive one. ``os.fsync`` and the renames are recorded (the synced
descriptor's path read back from ``/proc``), and the saves still have to round-trip.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from opticmem.encoder.checkpoint import load_checkpoint, save_checkpoint
from opticmem.encoder.config import preset
from opticmem.encoder.durable import fsync_path, write_text_durably
from opticmem.encoder.model import OCRModel, build_model
from opticmem.encoder.train import TrainConfig, make_optimizer, save_training_state

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads a descriptor's path from /proc/self/fd")

Event = tuple[str, str, str]
"""("fsync", path, ""), ("rename", source, target) or ("rmtree", path, "")."""


@pytest.fixture()
def events(monkeypatch: pytest.MonkeyPatch) -> list[Event]:
    """Every ``os.fsync``, rename and ``shutil.rmtree`` of the test, in order."""
    seen: list[Event] = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename
    real_rmtree = shutil.rmtree

    def fsync(fd: int) -> None:
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), ""))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        seen.append(("rename", str(Path(src).resolve()), str(Path(dst).resolve())))
        real_replace(src, dst)

    def rename(src: str | Path, dst: str | Path) -> None:
        seen.append(("rename", str(Path(src).resolve()), str(Path(dst).resolve())))
        real_rename(src, dst)

    def rmtree(path: str | Path, *args: object, **kwargs: object) -> None:
        seen.append(("rmtree", str(Path(path).resolve()), ""))
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    return seen


def synced(events: list[Event]) -> list[str]:
    return [path for kind, path, _ in events if kind == "fsync"]


@pytest.fixture(scope="module")
def model() -> OCRModel:
    return build_model(preset("test"), seed=4)


def test_a_checkpoint_syncs_every_file_before_its_rename_and_the_folders_after(
    model: OCRModel, tmp_path: Path, events: list[Event]
) -> None:
    """The renames into place were atomic but nothing was synced: after a power loss the
    renamed names could point at empty or partial shards."""
    out = save_checkpoint(model, tmp_path / "ckpt", max_shard_bytes=256 * 1024).resolve()
    renames = [(i, src, dst) for i, (kind, src, dst) in enumerate(events) if kind == "rename"]
    files = sorted(p for p in out.iterdir())
    assert len(files) > 3  # several shards, the index and the config
    assert sorted(Path(dst) for _, _, dst in renames) == files
    for i, src, _ in renames:
        assert src in synced(events[:i]), f"{src} renamed before it was synced"
    last = renames[-1][0]
    assert {str(out), str(out.parent)} <= set(synced(events[last:]))
    back = load_checkpoint(out, device="cpu")
    sa, sb = model.state_dict(), back.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_training_state_is_synced_before_it_is_swapped_in_and_the_old_one_deleted(
    model: OCRModel, tmp_path: Path, events: list[Event]
) -> None:
    """The optimiser shards and progress record beside the model were not synced either,
    nor the run folder around the swap: a power loss after the old state's deletion could
    leave the new one's files empty."""
    state = (tmp_path / "run" / "state").resolve()
    opt = make_optimizer(model, TrainConfig(out_dir=tmp_path / "run"), torch.device("cpu"))
    for step in (1, 2):  # the second save swaps over the first
        events.clear()
        save_training_state(state, model, opt, {"step": step, "pages": 2, "minutes": 0.1,
                                                "runs": 1, "log": []})
    tmp = state.with_name("state.tmp")
    swap = events.index(("rename", str(tmp), str(state)))
    written = sorted(str(tmp / p.relative_to(state)) for p in state.rglob("*") if p.is_file())
    assert len(written) > 4
    before = synced(events[:swap])
    missing = [p for p in written if p not in before and not p.startswith(str(tmp / "model"))]
    assert missing == []
    # The model's files were synced under their staging names, then renamed inside tmp.
    staged = {src for kind, src, _ in events[:swap]
              if kind == "rename" and src.startswith(str(tmp / "model"))}
    assert staged and staged <= set(before)
    assert {str(tmp), str(tmp / "model"), str(state.parent)} <= set(before)
    rmtree = events.index(("rmtree", str(state.with_name("state.old")), ""))
    assert str(state.parent) in synced(events[swap:rmtree])
    assert json.loads((state / "progress.json").read_text())["step"] == 2


def test_write_text_durably_syncs_the_file_then_its_folder_and_keeps_the_old_on_failure(
    tmp_path: Path, events: list[Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = (tmp_path / "progress.json").resolve()
    target.write_text("old")
    write_text_durably(target, "new")
    hidden = str(target.with_name(".progress.json.tmp"))
    assert events == [("fsync", hidden, ""), ("rename", hidden, str(target)),
                      ("fsync", str(tmp_path.resolve()), "")]
    assert target.read_text() == "new"

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_text_durably(target, "newer")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.json"]


def test_fsync_path_takes_files_and_folders(tmp_path: Path, events: list[Event]) -> None:
    (tmp_path / "f").write_bytes(b"x")
    fsync_path(tmp_path / "f")
    fsync_path(tmp_path)
    assert synced(events) == [str((tmp_path / "f").resolve()), str(tmp_path.resolve())]
