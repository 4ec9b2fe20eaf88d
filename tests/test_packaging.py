"""The wheel ships every data folder the package reads at run time, and builds without warnings
about folders missing from the package list."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = {  # folder in the wheel → files it must hold, as the source tree lays them out
    "opticmem/data": ROOT / "memory" / "data",
    "opticmem/render/fonts": ROOT / "render" / "fonts",
    "opticmem/encoder/weights": ROOT / "encoder" / "weights",
    "opticmem/encoder/eval_sources": ROOT / "encoder" / "eval_sources",
}


def test_wheel_ships_the_data_folders(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, check=True, timeout=300)
    assert "absent from the `packages` configuration" not in build.stdout + build.stderr
    (wheel,) = tmp_path.glob("opticmem-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "opticmem/py.typed" in names
    for folder, source in DATA.items():
        expected = {f"{folder}/{p.name}" for p in source.iterdir() if p.is_file()}
        assert expected and expected <= names, sorted(expected - names)


def test_queue_commands_without_the_redis_extra_say_what_to_install() -> None:
    """A base install (no ``[redis]`` extra): ``opticmem worker`` and ``opticmem queue``
    print the install hint as their one JSON error, not a traceback from importing the
    queue before the store URL is checked."""
    code = ("import sys\n"
            "sys.modules['redis'] = None  # as if redis-py were not installed\n"
            "from opticmem.cli import app\n"
            "app(sys.argv[1:], prog_name='opticmem')\n")
    for args in (["queue", "redis://localhost:1/0", "--json"],
                 ["worker", "redis://localhost:1/0", "--codec", "random", "--json"]):
        run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 1, (args, run.stderr[-2000:])
        assert "Traceback" not in run.stderr, (args, run.stderr[-2000:])
        assert "pip install 'opticmem[redis]'" in json.loads(run.stdout)["error"]
