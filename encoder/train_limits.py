"""The bounds of :class:`~opticmem.encoder.train.TrainConfig`'s settings that ``opticmem
train`` gives its options too.

A module of their own, importing nothing: the trainer's module imports torch, which the
CLI loads only once a command needs it (as :mod:`opticmem.recollect_limits` does for the
worker's bounds)."""

from __future__ import annotations

MAX_WORKERS = 256
"""The most data-generating processes a run may start (:attr:`TrainConfig.workers`). Each
is a whole Python process with its own copy of the synthetic-text sources, so a run needs
about as many as the machine has cores to spare; the default is the cores less three.
Fixed rather than tied to ``os.cpu_count()``, so a setting means the same on every
machine (16 to 128 cores here); far above what any of them can run, it still stops a
typo such as ``--workers 1000000000`` from reaching the data loader, which started
processes until the machine ran out of memory or PIDs."""
