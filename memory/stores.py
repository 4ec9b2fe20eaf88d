"""Open a store from a URL, and the registry that maps URL schemes to store classes.

Built in:

* ``memory://`` — a new :class:`~opticmem.memory_store.InMemoryStore`;
  ``memory://NAME`` — one shared in-process store per name (handy in tests and notebooks):
  each open gives a handle of its own on the name's data
  (:meth:`~opticmem.memory_store.InMemoryStore.handle`), so closing one — a memory closing
  the store it opened — leaves the others working;
* ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` (SQLAlchemy's
  convention: the path is what follows ``sqlite:///``), with an optional
  ``?synchronous=NORMAL`` (``sqlite:///:memory:`` is refused: use ``memory://``);
* ``redis://host:6379/0`` and ``rediss://…`` (TLS) — a
  :class:`~opticmem.redis_store.RedisStore`, with its settings in the query
  (``?tenant=acme&ttl=86400&max_turns=100000``; ``?cluster=1`` for a Redis Cluster, naming
  any node); ``unix:///path/redis.sock?db=0`` for one on a unix socket (redis-py's URL, the
  settings in the query as well); needs ``pip install 'opticmem[redis]'``.

Other backends register their scheme once, either with a factory or, so that importing
opticmem never imports their client library, with a lazy ``"module:attribute"`` string
(as Redis is registered)::

    register_store("mydb", "mypackage.store:MyStore.from_url")

>>> type(open_store("memory://")).__name__
'InMemoryStore'
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from opticmem.errors import StoreURLError
from opticmem.forks import ProcessLock
from opticmem.memory_store import InMemoryStore
from opticmem.sessions import _first_surrogate
from opticmem.sqlite_store import MEMORY_PATH_REFUSED, SQLiteStore
from opticmem.store import Store

_QUERY_SECRET_RE = re.compile(r"((?:^|&)[^&=]*password=)[^&]*", re.IGNORECASE)
"""A query parameter that holds a secret: redis-py takes ``?password=`` (and, for
``rediss://``, ``?ssl_password=``) as well as the password in the netloc."""


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log and to put in errors
    and reports): the netloc's, and that of a ``password`` or ``ssl_password`` query
    parameter. A URL too malformed to parse is shown only if it holds neither an ``@``
    nor ``password``.

    >>> redact_url("redis://user:s3cret@db.example:6380/2")
    'redis://user:***@db.example:6380/2'
    >>> redact_url("redis://db.example/0?password=s3cret&tenant=acme")
    'redis://db.example/0?password=***&tenant=acme'
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        if "@" in url or "password" in url.lower():
            return "<unparseable URL>"
        return url
    query = _QUERY_SECRET_RE.sub(r"\1***", parts.query)
    if parts.password is None and query == parts.query:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{port}" if port else "")
    # Not urlunsplit: with no host it writes unix:///path as unix:/path
    return f"{parts.scheme}://{netloc}{parts.path}" + "".join(
        f"{mark}{part}" for mark, part in (("?", query), ("#", parts.fragment)) if part
    )


StoreFactory = Callable[[str], Store]
"""Makes a store from the full URL it was asked to open."""

_named: dict[str, InMemoryStore] = {}
"""Per name, a handle on its data kept here, never handed out and never closed."""
_lock = ProcessLock(threading.Lock)


def _memory(url: str) -> Store:
    name = url.split("://", 1)[1]
    if "?" in name or "#" in name:  # else taken into the name: a new store, silently
        raise StoreURLError(f"bad memory URL {redact_url(url)!r}: it takes no options; use "
                            "memory:// or memory://NAME")
    if not name:
        return InMemoryStore()
    with _lock:
        return _named.setdefault(name, InMemoryStore()).handle()


def _sqlite(url: str) -> Store:
    rest = url.split("://", 1)[1]
    if not rest.startswith("/") or len(rest) < 2:
        raise StoreURLError(
            f"bad SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////absolute/path.db"
        )
    path, _, query = rest[1:].partition("?")
    if not path:  # sqlite:///?synchronous=NORMAL: the check above saw the query as a path
        raise StoreURLError(f"bad SQLite URL {url!r}: it names no file; use "
                            "sqlite:///relative.db or sqlite:////absolute/path.db")
    opts = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    sync = opts.pop("synchronous", "FULL").upper()
    if opts or sync not in ("FULL", "NORMAL"):
        raise StoreURLError(f"bad SQLite URL options in {url!r}: only synchronous=FULL|NORMAL")
    if path == ":memory:":
        raise StoreURLError(f"bad SQLite URL {url!r}: {MEMORY_PATH_REFUSED}")
    if "\x00" in path or _first_surrogate(path) is not None:
        # sqlite3 would fail with a bare ValueError or UnicodeEncodeError opening it
        raise StoreURLError(f"bad SQLite URL {url!r}: the path has a NUL character or a lone "
                            "surrogate, which no file name can hold")
    return SQLiteStore(path, synchronous="NORMAL" if sync == "NORMAL" else "FULL")


_REDIS = "opticmem.redis_store:RedisStore.from_store_url"
_REGISTRY: dict[str, StoreFactory | str] = {
    "memory": _memory, "sqlite": _sqlite, "redis": _REDIS, "rediss": _REDIS, "unix": _REDIS,
}


def register_store(scheme: str, factory: StoreFactory | str, *, replace: bool = False) -> None:
    """Make ``open_store`` accept ``scheme://…`` URLs.

    ``factory`` is a callable taking the URL, or ``"package.module:attr.path"`` imported on
    first use. Registering a taken scheme needs ``replace=True``.
    """
    key = scheme.lower().rstrip(":/")
    if not key.isascii() or not key.replace("+", "").replace("-", "").isalnum():
        raise StoreURLError(f"bad URL scheme {scheme!r}")
    with _lock:
        if key in _REGISTRY and not replace:
            raise StoreURLError(f"store scheme {key!r} is already registered")
        _REGISTRY[key] = factory


def store_schemes() -> list[str]:
    """The URL schemes ``open_store`` knows, sorted."""
    return sorted(_REGISTRY)


def _resolve(target: str) -> StoreFactory:
    module, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise StoreURLError(f"the store backend {target!r} is not available: {exc}") from exc
    factory: StoreFactory = obj
    return factory


def open_store(url: str) -> Store:
    """Open the store a URL names (see the module docstring for the schemes).

    Raises :class:`~opticmem.errors.StoreURLError` for an unknown scheme or a bad URL.
    """
    if not isinstance(url, str) or "://" not in url:
        shown = redact_url(url) if isinstance(url, str) else url
        raise StoreURLError(f"not a store URL: {shown!r} (expected scheme://…)")
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise StoreURLError(f"malformed store URL {redact_url(url)!r}: {exc}") from None
    with _lock:
        entry = _REGISTRY.get(scheme)
    if entry is None:
        raise StoreURLError(
            f"unknown store scheme {scheme!r} in {redact_url(url)!r}; known: "
            f"{', '.join(store_schemes())}"
        )
    factory = _resolve(entry) if isinstance(entry, str) else entry
    return factory(url)
