"""Checks of the whole-number arguments the public API takes (counts, sizes, budgets).

One place for them, so every entry point refuses ``2.5``, ``True`` or ``-1`` with the same
:class:`~opticmem.errors.ConfigurationError` (or the error it names) before anything is
stored or computed: a store given ``2.5`` would truncate it, a ``range`` with a negative
step is silently empty, and a bare ``TypeError`` from deep inside says nothing.
"""

from __future__ import annotations

import operator

from opticmem.errors import ConfigurationError, OpticMemError


def whole_number(
    value: object, name: str, error: type[OpticMemError] = ConfigurationError
) -> int:
    """``value`` as an ``int`` if it is a whole number (any integer type, NumPy's too, but
    not ``bool`` or a float), else ``error`` naming ``name``.

    >>> whole_number(3, "k")
    3
    >>> whole_number(2.5, "k")
    Traceback (most recent call last):
    ...
    opticmem.errors.ConfigurationError: k must be a whole number, got 2.5
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise error(f"{name} must be a whole number, got {value!r}") from None


def check_count(name: str, value: object, why: str = "") -> None:
    """Raise :class:`~opticmem.errors.ConfigurationError` unless ``value`` is an int ≥ 1
    (``why``, if given, says what it counts)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"{name} must be a whole number ≥ 1{f' ({why})' if why else ''}, got {value!r}")
