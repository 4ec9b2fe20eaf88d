"""Optional dependencies: a clear ImportError that names the extra to install.

Framework integrations depend on packages opticmem does not install by default (LangChain
is the ``langchain`` extra). Importing :mod:`opticmem.integrations` itself never needs
them; importing one of its framework modules without them raises the error made here.
"""

from __future__ import annotations


def missing_extra(extra: str, exc: ImportError) -> ImportError:
    """An ImportError saying which package is missing and which extra brings it.

    >>> str(missing_extra("langchain", ImportError("x", name="langchain_core")))
    "langchain_core is not installed; this part of opticmem needs the 'langchain' extra: pip install 'opticmem[langchain]'"
    """  # noqa: E501
    missing = exc.name or "a required package"
    return ImportError(
        f"{missing} is not installed; this part of opticmem needs the {extra!r} extra: "
        f"pip install 'opticmem[{extra}]'"
    )
