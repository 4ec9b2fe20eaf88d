"""Benchmarks, each a module runnable as ``python -m benchmarks.<name>`` that prints a table
and writes ``benchmarks/results/<name>.md``. Not tests: nothing here asserts timings."""

from __future__ import annotations

from pathlib import Path


def publish(text: str, out: Path, *, append: bool = False) -> None:
    """Print a benchmark's results table and write it to ``out``, making its folder; with
    ``append``, after what ``out`` holds already (a run beside earlier ones)."""
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    if append and out.exists():
        text = out.read_text(encoding="utf-8") + "\n" + text
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}", flush=True)


def redis_environment(url: str, note: str = "") -> str:
    """One line on the Redis server at ``url``, the client and the machine, for a table."""
    import os
    import platform
    import time

    import redis

    with redis.Redis.from_url(url) as r:
        info = r.info()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return (
        f"Redis {info['redis_version']} on 127.0.0.1 (AOF on, appendfsync everysec); "
        f"redis-py {redis.__version__}; Python {platform.python_version()}; "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"load average {load[0]:.1f} at start{note}; {time.strftime('%Y-%m-%d')}."
    )
