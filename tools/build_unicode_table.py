"""Freeze the Unicode properties the layout reads into ``render/fonts/unicode.npz``.

Which characters take two cells, and which are drawn as nothing, a space or a box, come
from the Unicode database. Python's :mod:`unicodedata` follows the interpreter's Unicode
version (14.0 in 3.11, 15.0 in 3.12, …), so read at run time they would lay the same text
out differently on two Pythons — an emoji assigned in 15.0 is one cell on one and two on
the other — and pages would stop being a pure function of text and settings. The table
is taken once, from the Unicode version the glyph atlas was built with, and shipped.

Run it with a Python whose ``unicodedata.unidata_version`` equals the atlas's
``unicode_version`` (it refuses otherwise)::

    python tools/build_unicode_table.py     # writes render/fonts/unicode.npz
"""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path

import numpy as np

from opticmem.render.atlas import UNICODE_FILE, atlas_unicode_version, unicode_properties


def main() -> int:
    version = atlas_unicode_version()
    if unicodedata.unidata_version != version:
        print(f"this Python has Unicode {unicodedata.unidata_version}; the atlas was built "
              f"with {version}: run this tool with a Python of that version", file=sys.stderr)
        return 1
    props = unicode_properties(unicodedata)
    out = Path(__file__).resolve().parents[1] / "render" / "fonts" / UNICODE_FILE
    meta = np.frombuffer(json.dumps({"unicode_version": version}).encode(), dtype=np.uint8)
    np.savez_compressed(out, props=props, meta=meta)
    print(f"wrote {out} ({out.stat().st_size:,} bytes, Unicode {version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
