"""Whether to draw progress bars: ``OPTICMEM_PROGRESS`` decides, else whether stderr is a
terminal.

Bars are drawn only for long work (training, ``opticmem eval``, the CLI's page reading,
``demo``'s replay, ``ingest`` and ``render``),
always on stderr, never with ``--json``. ``OPTICMEM_PROGRESS=0`` turns them off everywhere
(a log collector that records a terminal's stderr); ``OPTICMEM_PROGRESS=1`` turns them on
where stderr is not a terminal (a training run's captured log).
"""

from __future__ import annotations

import os

ENV = "OPTICMEM_PROGRESS"
OFF = frozenset({"0", "false", "no", "off"})
ON = frozenset({"1", "true", "yes", "on"})


def progress_enabled(stderr_is_terminal: bool) -> bool:
    """``OPTICMEM_PROGRESS`` when set to on/off (1/0, true/false, yes/no), else the
    terminal test."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in OFF:
        return False
    if value in ON:
        return True
    return stderr_is_terminal
