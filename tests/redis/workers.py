"""Code the multi-process Redis tests run in child processes (importable under spawn)."""

from __future__ import annotations

import hashlib
from typing import Any

from opticmem.redis_store import RedisStore


def append_and_read(
    url: str, tenant: str, proc: int, sessions: list[str], n: int, barrier: Any, out: Any
) -> None:
    """Append ``n`` turns round-robin over ``sessions``, then read every session back.

    Puts ``(proc, acks, digests)`` on ``out``: the ``(session, seq, text)`` of every
    acknowledged append, and a digest of each session as this process reads it once all
    processes are done writing.
    """
    store = RedisStore.from_url(url, tenant=tenant)
    try:
        barrier.wait()
        acks = []
        for i in range(n):
            session = sessions[(proc + i) % len(sessions)]
            text = f"p{proc}-{i}"
            t = store.append_turn(session, "user", text, float(i), {"proc": proc})
            acks.append((session, t.seq, text))
        barrier.wait()  # everyone has written: now everyone reads
        digests = {}
        for s in sessions:
            turns = store.get_turns(s, 0, 10**9)
            h = hashlib.sha256()
            for t in turns:
                h.update(f"{t.seq}\x00{t.text}\x00".encode())
            digests[s] = (len(turns), h.hexdigest())
        out.put((proc, acks, digests))
    finally:
        store.close()
