"""Views of a session for people: the decay contact sheet.

:func:`decay_sheet` puts the pages of a context in one column per tier (Large, Base,
Small, Tiny) — each drawn at its tier and shown at one display size, so the blur is
visible — plus a column of the newest archived pages (out of context) at Tiny.
The composition itself is :func:`opticmem.render.sheet.contact_sheet`.
"""

from __future__ import annotations

from numbers import Real
from typing import TYPE_CHECKING

from PIL import Image

from opticmem.arguments import whole_number
from opticmem.artefacts import Job
from opticmem.context import Context
from opticmem.errors import ConfigurationError
from opticmem.render import ORDER, Tier
from opticmem.render.sheet import MAX_CELL, MIN_CELL, SheetColumn, contact_sheet

if TYPE_CHECKING:
    from opticmem.memory import OpticalMemory


def decay_sheet(
    memory: OpticalMemory,
    context: Context,
    *,
    archived: int = 4,
    crop: float = 0.25,
    cell: int | None = None,
) -> Image.Image:
    """The contact sheet of ``context``: its pages by tier, plus up to ``archived`` of the
    newest archived pages. ``crop`` keeps the top-left fraction of each page's width and
    height (where the text starts); ``cell`` is the display size, by default the size of
    that crop on a Large page — so Large is shown pixel for pixel and every lower tier is
    magnified, which is what makes its lost detail visible.

    ``archived`` must be a whole number ≥ 0, ``crop`` in ``(0, 1]`` and ``cell`` a whole
    number from 16 to 4096, else :class:`~opticmem.errors.ConfigurationError` (a
    ``ValueError``)."""
    # checked before use: cell=0 was taken for the default, archived=-3 for 0, crop=nan
    # failed with "cannot convert float NaN to integer" and cell=nan with a bare TypeError
    archived = whole_number(archived, "archived")
    if archived < 0:
        raise ConfigurationError(f"archived must be ≥ 0, got {archived}")
    if isinstance(crop, bool) or not isinstance(crop, Real) or not 0 < crop <= 1:
        raise ConfigurationError(f"crop must be a number in (0, 1], got {crop!r}")
    if cell is not None:
        cell = whole_number(cell, "cell")
        if not MIN_CELL <= cell <= MAX_CELL:
            raise ConfigurationError(
                f"cell must be {MIN_CELL} to {MAX_CELL} pixels, got {cell}")
    cell = cell or max(64, round(Tier.LARGE.pixels * crop))
    session = context.session
    jobs = [Job(p.record, p.tier) for p in context.pages]
    images = memory._artefacts.images(session, jobs)
    by_tier: dict[Tier, list[tuple[str, Image.Image]]] = {t: [] for t in ORDER}
    for p, img in zip(context.pages, images, strict=True):
        label = f"p{p.page_no} · turns {p.first_seq}-{p.last_seq}" + (
            " · text" if p.shown == "text" else ""
        )
        by_tier[p.tier].append((label, img))
    columns = [SheetColumn(f"{t.value.title()} {t.pixels}px", by_tier[t][::-1]) for t in ORDER]
    oldest = min((p.page_no for p in context.pages), default=memory.store.page_count(session))
    out_pages = memory.store.get_pages(session, max(0, oldest - archived), oldest)[::-1]
    out_imgs = memory._artefacts.images(session, [Job(p, Tier.TINY) for p in out_pages])
    columns.append(SheetColumn(
        "Out (archived)",
        [(f"p{p.page_no} · turns {p.first_seq}-{p.last_seq}", img)
         for p, img in zip(out_pages, out_imgs, strict=True)],
    ))
    title = (f"session {session!r} · budget {context.budget} · cost {int(context.cost)} · "
             f"newest pages at the top")
    return contact_sheet(columns, cell=cell, crop=crop, title=title)
