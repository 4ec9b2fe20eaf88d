"""Which opticmem session a LangChain/LangGraph run belongs to.

By default the session is the LangGraph thread: ``config["configurable"]["thread_id"]``,
the key every checkpointer stores a conversation under, so one thread's history is one
memory session. A :data:`SessionSpec` overrides that:

* a string: one fixed session for every run (e.g. one per user, across threads);
* a callable ``config -> str``: computed per run from the ``RunnableConfig`` (for
  example ``lambda c: c["configurable"]["user_id"]``).

The middleware and the recall tool resolve sessions the same way, so a tool call inside
an agent run searches the session that run records into.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from opticmem.errors import InvalidSessionError
from opticmem.sessions import validate_session

try:
    from langchain_core.runnables import RunnableConfig
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from opticmem.integrations.extras import missing_extra

    raise missing_extra("langchain", exc) from exc

SessionSpec = str | Callable[[RunnableConfig], str] | None
"""A fixed session id, a function of the run's config, or ``None`` (the thread id)."""


def thread_id(config: Mapping[str, Any] | None) -> str | None:
    """The LangGraph thread id in ``config``, or ``None``.

    >>> thread_id({"configurable": {"thread_id": "t-1"}}), thread_id({})
    ('t-1', None)
    """
    if not config:
        return None
    configurable = config.get("configurable") or {}
    value = configurable.get("thread_id")
    return None if value is None else str(value)


def check_session_spec(spec: object) -> SessionSpec:
    """``spec`` if it is a :data:`SessionSpec`, else
    :class:`~opticmem.errors.InvalidSessionError`; a fixed id is validated here, where it is
    configured, rather than at the first model call.

    >>> check_session_spec("alice"), check_session_spec(None)
    ('alice', None)
    """
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, str):
        return validate_session(spec)
    raise InvalidSessionError(
        f"session must be a session id (str), a function of the run's config returning one, "
        f"or None (the thread id), got {type(spec).__name__}")


def resolve_session(spec: SessionSpec, config: RunnableConfig | None) -> str:
    """The session id for a run with ``config`` under ``spec`` (see the module docstring).

    Raises :class:`~opticmem.errors.InvalidSessionError` when no session can be found
    (no ``spec`` and no thread id) or the id is not storable.

    >>> resolve_session(None, {"configurable": {"thread_id": "t-1"}})
    't-1'
    >>> resolve_session(lambda c: "user:" + c["configurable"]["user"],
    ...                 {"configurable": {"user": "ada"}})
    'user:ada'
    """
    spec = check_session_spec(spec)  # 5 or b"alice" failed: "'int' object is not callable"
    if isinstance(spec, str):
        return spec
    if spec is not None:
        return validate_session(spec(config or {}))
    found = thread_id(config)
    if found is None:
        raise InvalidSessionError(
            "no session: the run has no thread id (config['configurable']['thread_id']); "
            "run the agent with a checkpointer and a thread id, or pass session=... "
            "(a fixed id or a function of the config)"
        )
    return validate_session(found)


def current_config(fallback_thread: str | None = None) -> RunnableConfig | None:
    """The ``RunnableConfig`` of the LangGraph run this code is inside, if any.

    Outside a runnable context, a config holding only ``fallback_thread`` (when given).
    """
    try:
        from langgraph.config import get_config

        return get_config()
    except (ImportError, RuntimeError):
        if fallback_thread is None:
            return None
        return {"configurable": {"thread_id": fallback_thread}}


__all__ = ["SessionSpec", "check_session_spec", "current_config", "resolve_session",
           "thread_id"]
