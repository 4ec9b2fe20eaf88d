"""Session ids and tenants as keys: hostile ids stay in their own keys, tenants stay apart,
and the key encoding is injective and free of hash-tag and glob characters."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from typing import Any, cast

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from opticmem.errors import InvalidSessionError
from opticmem.records import PageRecord
from opticmem.redis_store import MAX_ID_BYTES, RedisStore, decode_direct_id, encode_id

pytestmark = pytest.mark.redis

LONG = "x" * 10_000
HOSTILE = [
    "",
    " ",
    "with space",
    "*",
    "?",
    "[a-z]",
    "\\",
    "{",
    "}",
    "{}",
    "{test:a}",
    "a}:turns",
    "a}",
    "}:b:k",
    ":",
    "a:b",
    "a",
    "test:a",
    "%2A",  # the escaped form of "*", as a literal id
    "~" + hashlib.sha256(LONG.encode()).hexdigest(),  # looks like the digest of LONG
    "opticmem:{test:a}:turns",
    "line\nbreak\r\x00nul\x1b",
    "emoji 😀 and ünïcödé and 서울",
    LONG,
    LONG + "y",  # differs from LONG only past the digest cut-off
    "x" * 9_999,
    "서" * 10_000,  # 30k bytes of UTF-8
    "a" * 127,
    "a" * 128,  # around the direct/digest boundary
    "a" * 129,
]


def page(session: str, n: int) -> PageRecord:
    return PageRecord(session=session, page_no=n, first_seq=0, first_line=0, last_seq=0,
                      end_line=1, transcript=f"page of {session[:20]!r}", text_tokens=3,
                      first_ts=0.0, last_ts=0.0, render_key="r")


def test_hostile_ids_are_isolated(store: RedisStore, raw: redis.Redis) -> None:
    assert len(set(HOSTILE)) == len(HOSTILE)
    for i, s in enumerate(HOSTILE):
        store.append_turns(s, [("user", f"turn of #{i}", float(i), {"i": i})] * (1 + i % 3))
        store.add_page(page(s, 0))
        store.put_blob(s, "k", f"blob of #{i}".encode())
        store.put_blob(s, s, f"self-named blob of #{i}".encode())
    assert sorted(store.sessions()) == sorted(HOSTILE)
    for i, s in enumerate(HOSTILE):
        turns = store.get_turns(s, 0, 100)
        assert [(t.text, t.meta, t.session) for t in turns] == [(f"turn of #{i}", {"i": i}, s)] * (
            1 + i % 3
        )
        assert store.turn_count(s) == 1 + i % 3
        assert store.get_pages(s, 0, 5) == [page(s, 0)]
        assert store.get_blob(s, "k") == f"blob of #{i}".encode()
        assert store.get_blob(s, s) == f"self-named blob of #{i}".encode()

    # every key holds exactly one hash tag, and a session's keys share one cluster slot
    slots: dict[bytes, set[int]] = {}
    for key in raw.scan_iter(count=1000):
        assert key.count(b"{") == 1 and key.count(b"}") == 1, key
        tag = key[key.index(b"{") + 1 : key.index(b"}")]
        assert all(c < 0x80 for c in tag) and b"*" not in tag and b"?" not in tag
        slots.setdefault(tag, set()).add(key_slot(key))
    assert len(slots) == len(HOSTILE)
    assert all(len(s) == 1 for s in slots.values())

    # deleting one never touches another
    for i, s in enumerate(HOSTILE):
        store.delete_session(s)
        assert store.turn_count(s) == 0 and store.get_blob(s, "k") is None
        for j, other in enumerate(HOSTILE[i + 1 :], start=i + 1):
            assert store.get_turns(other, 0, 1)[0].text == f"turn of #{j}"
    assert list(store.sessions()) == []
    assert list(raw.scan_iter()) == []


def test_tenants_are_isolated(redis_url: str) -> None:
    tenants = ["a", "a:b", "b", "a*", "{a}", "*", "a%3Ab", "t" * 300]
    stores = {t: RedisStore.from_url(redis_url, tenant=t) for t in tenants}
    for t, s in stores.items():
        for sess in ("shared", "b:shared", f"only-{t}"):
            s.append_turn(sess, "user", f"{t}/{sess}", 0.0)
        s.put_blob("shared", "k", t.encode())
    for t, s in stores.items():
        assert set(s.sessions()) == {"shared", "b:shared", f"only-{t}"}
        assert [x.text for x in s.get_turns("shared", 0, 5)] == [f"{t}/shared"]
        assert s.get_blob("shared", "k") == t.encode()
    stores["a"].delete_session("shared")
    assert stores["a:b"].turn_count("shared") == 1 and stores["a*"].turn_count("shared") == 1
    for s in stores.values():
        s.close()


def test_oversized_and_invalid_ids_are_refused(store: RedisStore) -> None:
    with pytest.raises(InvalidSessionError, match="limit"):
        store.append_turn("x" * (MAX_ID_BYTES + 1), "user", "hi", 0.0)
    with pytest.raises(InvalidSessionError, match="surrogate"):
        store.append_turn("bad \ud800 id", "user", "hi", 0.0)
    with pytest.raises(InvalidSessionError, match="str"):
        store.turn_count(cast(Any, 42))
    with pytest.raises(ValueError, match="tenant"):
        RedisStore(client=store._sync(), tenant="")
    assert list(store.sessions()) == []


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200))
def test_encoding_is_injective_and_key_safe(a: str, b: str) -> None:
    ea, eb = encode_id(a), encode_id(b)
    assert (ea == eb) == (a == b)
    for e in (ea, eb):
        assert e.isascii() and not set(e) & set("{}:*?[]\\ \n")
        assert len(e) <= 128 or len(e) == 65
    if not ea.startswith("~"):
        assert decode_direct_id(ea) == a


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40))
def test_foreign_key_fragments_never_decode_to_a_different_id(text: str) -> None:
    value = decode_direct_id(text)
    assert value is None or encode_id(value) == text


def test_importing_opticmem_does_not_import_redis() -> None:
    code = (
        "import sys, opticmem, opticmem.store, opticmem.records, opticmem.errors\n"
        "assert 'redis' not in sys.modules, 'opticmem imported redis'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_redis_package_gives_a_clear_error() -> None:
    code = (
        "import sys\n"
        "sys.modules['redis'] = None  # as if redis-py were not installed\n"
        "try:\n"
        "    import opticmem.redis_store\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('imported without redis')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert "pip install 'opticmem[redis]'" in out.stdout


def test_a_redis_py_too_old_is_named_in_the_error() -> None:
    """redis-py 5 (which the extra allowed) lacks what the store imports: the error said
    the store needs "redis-py 5 or newer" to a user who had it."""
    code = (
        "import importlib.metadata, redis.backoff\n"
        "del redis.backoff.ExponentialWithJitterBackoff  # as in redis-py 5\n"
        "try:\n"
        "    import opticmem.redis_store\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "    print(importlib.metadata.version('redis'))\n"
        "else:\n"
        "    raise SystemExit('imported without ExponentialWithJitterBackoff')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    message, installed = out.stdout.strip().splitlines()
    assert "redis-py 6.1 or newer" in message and f"{installed} is installed" in message
    assert "pip install 'opticmem[redis]'" in message


def test_the_redis_extra_asks_for_the_redis_py_the_store_needs() -> None:
    from pathlib import Path

    from opticmem.redis_store import MIN_REDIS_PY

    project = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert f'\nredis = ["redis>={MIN_REDIS_PY}"]\n' in project


def test_docstring_examples() -> None:
    import doctest

    import opticmem.redis_store

    result = doctest.testmod(opticmem.redis_store)  # redact_url's moved to opticmem.stores
    assert result.attempted >= 2 and result.failed == 0
