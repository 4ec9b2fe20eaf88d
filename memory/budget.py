"""The budget planner: fit pages and turns into a token budget, keeping decay monotone.

Pure arithmetic over costs the caller computed with the consumer's cost model:

1. Start every candidate page at its policy level, raised to the session's *decay mark*
   (below), then made monotone: an older page is never sharper than a newer one.
2. While over budget, demote the **oldest visible page** one tier (Large → Base → Small →
   Tiny → out), repeatedly.
3. Only when no page is left in context, drop the oldest verbatim/staging turns — never
   the newest turn. If the newest turn alone does not fit, raise
   :class:`~opticmem.errors.BudgetError`.

With no page in context the turns may need a short note before them (``lead_costs``: the
context's messages must open with a user message, and an assistant's reply may be the
oldest turn kept); its cost is charged for whichever turn comes first, so dropping a turn
may bring the note in, and the plan still never exceeds the budget.

**The decay mark.** Budget pressure alone is not monotone over time: when staging text
is sealed onto a page, the context can become *cheaper*, and a page demoted under
pressure a moment ago would come back sharper. The planner therefore returns a
:class:`Mark` — "pages before ``page_no`` are out, page ``page_no`` is at most
``level``" — which the memory stores per session and consumer (budget, prices, policy)
and feeds back into the next plan. Marks only move forward, so adding turns never
promotes a page.

>>> pages = [PageOption(0, 0, (421, 273, 111, 73)), PageOption(1, 0, (421, 273, 111, 73))]
>>> p = plan(700, pages, [100], page_header=10)
>>> p.levels, p.cost, p.mark
((2, 0), 642, Mark(page_no=0, level=2))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opticmem.errors import BudgetError
from opticmem.policy import OUT


@dataclass(frozen=True, order=True, slots=True)
class Mark:
    """Pages numbered below ``page_no`` are out; page ``page_no`` is at level ≥ ``level``.

    Ordered so that a larger mark demotes at least as much.
    """

    page_no: int = 0
    level: int = 0

    def apply(self, page_no: int, level: int) -> int:
        """The level of page ``page_no`` under this mark (never sharper than given)."""
        if page_no < self.page_no:
            return OUT
        if page_no == self.page_no:
            return max(level, self.level)
        return level


@dataclass(frozen=True, slots=True)
class PageOption:
    """A page that may be in context: its policy level and its full cost at levels 0–3
    (caption, image or text, facts line — after the savings gate)."""

    page_no: int
    level: int
    costs: tuple[int, int, int, int]

    def cost(self, level: int) -> int:
        return 0 if level >= OUT else self.costs[level]


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's answer: a level per page (oldest first), the first kept turn, the
    total cost, and the mark to remember."""

    levels: tuple[int, ...]
    first_turn: int
    cost: int
    mark: Mark
    demotions: int
    """Tier steps below the policy's levels, taken under budget pressure now or remembered
    in the mark (0 when the policy alone fits)."""


def _least(turn_costs: Sequence[int], lead: Sequence[int]) -> int:
    """The least budget that holds the newest turn with no page: over every run of the
    newest turns, what it costs with its lead note. Usually the newest turn and its note;
    less when the turn before it, kept, makes the note needless and costs less than it."""
    least, run = turn_costs[-1] + lead[-1], 0
    for cost, note in zip(reversed(turn_costs), reversed(lead), strict=True):
        run += cost
        least = min(least, run + note)
    return least


def plan(
    budget: int,
    pages: Sequence[PageOption],
    turn_costs: Sequence[int],
    *,
    page_header: int = 0,
    mark: Mark | None = None,
    lead_costs: Sequence[int] = (),
) -> Plan:
    """Fit ``pages`` (oldest first) and turns (``turn_costs``, oldest first) into ``budget``.

    ``page_header`` is charged once when at least one page is in context (the memory
    message's overhead and header text). ``lead_costs[i]`` (default: all 0) is charged
    when no page is in context and turn ``i`` is the oldest kept: what the note the turns
    then need before them costs (:func:`~opticmem.context.lead_note_costs`). The newest
    turn with its own lead cost is the least a plan can hold.

    >>> plan(30, [], [10, 10, 10], lead_costs=[0, 5, 0]).first_turn  # all three fit
    0
    >>> p = plan(24, [], [10, 10, 10], lead_costs=[0, 5, 0])  # dropping turn 0 costs a note
    >>> p.first_turn, p.cost
    (2, 10)
    """
    if budget < 1:
        raise BudgetError(f"budget must be at least 1 token, got {budget}")
    if lead_costs and len(lead_costs) != len(turn_costs):
        raise ValueError(f"lead_costs has {len(lead_costs)} entries for {len(turn_costs)} turns")
    lead = list(lead_costs) or [0] * len(turn_costs)
    first_lead = lead[0] if lead else 0  # what the note costs with every turn kept
    mark = mark or Mark()
    policy = [min(max(p.level, 0), OUT) for p in pages]
    for i in range(len(policy) - 2, -1, -1):  # monotone: older ≥ newer level
        policy[i] = max(policy[i], policy[i + 1])
    levels = [mark.apply(p.page_no, lv) for p, lv in zip(pages, policy, strict=True)]
    vis = next((i for i, lv in enumerate(levels) if lv < OUT), len(levels))
    total = sum(p.cost(lv) for p, lv in zip(pages, levels, strict=True)) + sum(turn_costs)
    total += page_header if vis < len(levels) else first_lead
    while total > budget and vis < len(levels):
        old = levels[vis]
        levels[vis] = old + 1
        total += pages[vis].cost(old + 1) - pages[vis].cost(old)
        if levels[vis] >= OUT:
            vis += 1
            if vis == len(levels):
                total += first_lead - page_header  # no page: the turns may need the note
    first = 0
    while total > budget and first < len(turn_costs) - 1:
        total -= turn_costs[first] + lead[first]
        first += 1
        total += lead[first]
    if total > budget:
        need = _least(turn_costs, lead) if turn_costs else total
        noted = (" with what must come before it (an assistant's turn cannot open the "
                 "context: a short user note, or the turn before it)"
                 ) if turn_costs and lead[-1] else ""
        raise BudgetError(
            f"a budget of {budget} tokens cannot hold even the newest turn, which costs "
            f"{need} tokens under this cost model{noted}; raise budget_tokens to at least "
            f"{need}",
            needed=need,
        )
    if vis < len(levels):
        new_mark = Mark(pages[vis].page_no, levels[vis])
    elif pages:
        new_mark = Mark(pages[-1].page_no + 1, 0)
    else:
        new_mark = mark
    demotions = sum(lv - base for lv, base in zip(levels, policy, strict=True))
    return Plan(tuple(levels), first, total, max(new_mark, mark), demotions)
