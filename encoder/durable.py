"""Flushing what a save wrote to the disk itself, so that a power loss cannot undo it.

Checkpoints and training states are written under temporary names and renamed into
place. A rename is atomic, but without ``fsync`` neither the bytes of the files nor the
rename itself need have reached the disk when the call returns: after a power loss the
renamed folder could hold empty or partial shards (ext4, XFS and btrfs may commit the
rename before the data), or the old names could come back. The order a durable save
keeps is therefore:

1. each file written is synced (:func:`fsync_path`) before it is renamed;
2. the folder holding a rename (and one just made) is synced after it, so the new name
   is on disk before anything that counts on it (deleting the older copy) happens.

:func:`write_text_durably` does both for one small file. Where the platform cannot
sync a folder (Windows opens none), that step is skipped: the files' own data is still
flushed.
"""

from __future__ import annotations

import os
from pathlib import Path

_SYNCS_FOLDERS = os.name != "nt"


def fsync_path(path: str | Path) -> None:
    """Flush ``path`` (a file, or a folder's entries: names made, renamed or removed in
    it) to the disk. A file is opened for writing where only that lets it be synced
    (Windows); elsewhere read-only, which ``fsync`` accepts for files and folders alike."""
    p = Path(path)
    if p.is_dir():
        if not _SYNCS_FOLDERS:
            return
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    else:
        flags = os.O_RDONLY if _SYNCS_FOLDERS else os.O_RDWR
    fd = os.open(p, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_durably(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically and durably: written to a hidden
    sibling, synced, renamed over ``path``, and the folder synced. A reader (or a power
    loss) sees the old content or the new, never an empty or partial file."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        fsync_path(tmp)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(target.parent)
