"""The bounds of :class:`~opticmem.recollect_worker.RecollectWorker`'s settings, which
``opticmem worker`` gives its options too.

A module of their own, importing nothing: the worker's module imports redis-py, and the
CLI imports these while it starts, on an install without the ``[redis]`` extra as well
(where importing them from the worker ended every ``opticmem`` command in an ImportError
traceback)."""

from __future__ import annotations

MAX_CLAIM_IDLE = 1e9
"""Largest ``claim_idle`` (about 31 years): Redis takes XAUTOCLAIM's idle time as
milliseconds in a signed 64-bit integer. Past that (1e20) every step of the worker failed
and was retried for ever, reading nothing; ``inf`` ended it in an OverflowError traceback."""

MAX_BATCH_SIZE = 1_000_000
"""Largest ``batch_size``: far more pages than any device reads at once. Redis refuses
an XAUTOCLAIM count past about 5.7e16 ("COUNT must be > 0"): with 1e20 every step of the
worker failed and was retried for ever, reading nothing (``--once`` gave up after a
minute and exited 0)."""
