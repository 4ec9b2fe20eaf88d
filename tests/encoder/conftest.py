"""Encoder tests run torch single-threaded.

The models under test are tiny; on a small shared machine, intra-op threads only add
synchronisation (and, when other processes hold the cores, spin-wait stalls that make
a 0.1 s decode take 10 s). The previous setting is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_torch() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
