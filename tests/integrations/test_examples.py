"""The examples run as a user would run them (subprocesses), and say what they should.

``redis_bot.py`` talks to the real redis-server of ``tests/conftest.py``;
``chat_loop_openai.py`` runs unconfigured (a clean message, exit 0) and against a real
local HTTP server that speaks the chat-completions protocol.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, *args: str, stdin: str = "", env: dict[str, str] | None = None,
                cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    base["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], input=stdin, capture_output=True,
        text=True, timeout=300, env={**base, **(env or {})}, cwd=cwd,
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_echo_loop_stays_in_budget_and_reports_the_make_up() -> None:
    out = run_example("chat_loop_echo.py", "--turns", "40", "--budget", "1500").stdout
    sent = [tuple(map(int, m)) for m in re.findall(r"(\d+) page images, +(\d+)/1500", out)]
    assert len(sent) == 40
    assert max(tokens for _, tokens in sent) <= 1500
    assert max(images for images, _ in sent) >= 1  # older turns went onto pages
    assert "40 user turns, 80 stored turns" in out
    assert re.search(r"pages per tier: \{'large': \d+, 'base': \d+", out)
    assert "recall 'When is the Titan launch?'" in out
    assert "Tier." not in out and "None)" not in out  # a hit's tier by name, or none


def test_echo_loop_reads_turns_from_stdin() -> None:
    out = run_example("chat_loop_echo.py", "--stdin",
                      stdin="hello there\n\nmy ticket is ABC-123\n").stdout
    assert "turn 2: 'my ticket is ABC-123'" in out
    assert "2 user turns, 4 stored turns" in out


def test_openai_loop_without_configuration_exits_cleanly() -> None:
    proc = run_example("chat_loop_openai.py", "-m", "hello")
    assert "No endpoint configured: set OPENAI_MODEL" in proc.stdout
    assert proc.stderr == ""


class _Endpoint(BaseHTTPRequestHandler):
    """A chat-completions server: answers each POST, keeping what it was sent."""

    received: ClassVar[list[dict[str, Any]]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append({"path": self.path, "auth": self.headers.get("Authorization"),
                              "body": body})
        message: dict[str, Any] = {"role": "assistant",
                                   "content": f"answer {len(self.received)}"}
        if body["messages"][-1]["content"] == "forbidden":  # a model that declines
            message = {"role": "assistant", "content": None, "refusal": "I can't help."}
        reply = {"id": "x", "object": "chat.completion", "choices": [{
            "index": 0, "finish_reason": "stop", "message": message}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    log: list[dict[str, Any]] = []

    class Handler(_Endpoint):
        received = log

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", log
    finally:
        server.shutdown()
        server.server_close()


OpenAILoop = tuple[Callable[..., str], list[dict[str, Any]]]


@pytest.fixture
def openai_loop(endpoint: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> OpenAILoop:
    """``chat_loop_openai.py`` run on the endpoint (one ``-m`` a message), and what it got."""
    url, received = endpoint
    env = {"OPENAI_BASE_URL": url, "OPENAI_API_KEY": "sk-test", "OPENAI_MODEL": "tiny-vlm"}

    def run(*messages: str) -> str:
        args = [arg for message in messages for arg in ("-m", message)]
        return run_example("chat_loop_openai.py", *args, env=env, cwd=tmp_path).stdout

    return run, received


def test_openai_loop_against_a_compatible_endpoint(openai_loop: OpenAILoop) -> None:
    run, received = openai_loop
    out = run("Plan Titan", "What did I say?")
    assert "tiny-vlm> answer 1" in out and "tiny-vlm> answer 2" in out
    assert [r["path"] for r in received] == ["/v1/chat/completions"] * 2
    assert received[0]["auth"] == "Bearer sk-test"
    messages = received[1]["body"]["messages"]
    assert received[1]["body"]["model"] == "tiny-vlm"
    assert messages[0]["role"] == "system"
    assert [m["content"] for m in messages[1:]] == ["Plan Titan", "answer 1", "What did I say?"]
    again = run("And now?")
    assert "(4 turns so far)" in again  # the default sqlite store kept the conversation
    assert len(received[2]["body"]["messages"]) == 6


def test_openai_loop_prints_and_keeps_a_refusal(openai_loop: OpenAILoop) -> None:
    # a refusal has content None: the wrapper refused the reply (UnsupportedReplyError)
    # and the example would have printed "None"
    run, received = openai_loop
    out = run("forbidden", "Why?")
    assert "tiny-vlm> I can't help." in out and "tiny-vlm> answer 2" in out
    assert [m["content"] for m in received[1]["body"]["messages"][1:]] == [
        "forbidden", "I can't help.", "Why?"]


@pytest.mark.redis
def test_redis_bot_serves_concurrent_sessions_through_redis(redis_url: str) -> None:
    proc = run_example("redis_bot.py", "--redis-url", redis_url, "--sessions", "4",
                       "--turns", "60", "--budget", "1500", "--json")
    summary = json.loads(proc.stdout)
    assert (summary["sessions"], summary["turns"]) == (4, 480)
    assert 0 < summary["largest_prompt"] <= 1500
    assert sum(summary["pages_per_tier"].values()) >= 4  # every session paged
    human = run_example("redis_bot.py", "--redis-url", redis_url, "--sessions", "4",
                        "--turns", "1").stdout
    # continued the same sessions; the rate counts only this run's 8 turns
    assert "sessions: 4\nturns stored: 488 (8 this run, " in human
    assert re.search(r"pages per tier: large \d+, base \d+, small \d+, tiny \d+, out \d+", human)
    fresh = run_example("redis_bot.py", "--redis-url", redis_url, "--sessions", "2",
                        "--turns", "1", "--fresh", "--json").stdout
    assert json.loads(fresh)["turns"] == 4


@pytest.mark.redis
def test_redis_bot_closes_its_async_redis_connection(redis_url: str) -> None:
    """The bot closed its store with the sync ``close()`` inside the event loop, which drops
    the loop's async client unclosed: ResourceWarnings (unclosed Connection, socket,
    transport) at exit."""
    proc = run_example("redis_bot.py", "--redis-url", redis_url, "--sessions", "2",
                       "--turns", "1", "--json", env={"PYTHONWARNINGS": "default"})
    assert json.loads(proc.stdout)["sessions"] == 2
    assert "ResourceWarning" not in proc.stderr, proc.stderr


@pytest.mark.redis
def test_redis_bot_takes_the_workers_store_url_with_its_tenant(redis_url: str) -> None:
    """The docstring's worker URL (``redis://…?tenant=redis-bot``) given as --redis-url
    ended the bot in a StoreURLError traceback (RedisStore.from_url takes the tenant as a
    keyword argument)."""
    first = run_example("redis_bot.py", "--redis-url", f"{redis_url}?tenant=url-bot",
                        "--sessions", "2", "--turns", "1", "--fresh", "--json").stdout
    assert json.loads(first)["turns"] == 4
    again = run_example("redis_bot.py", "--redis-url", redis_url, "--tenant", "url-bot",
                        "--sessions", "2", "--turns", "1", "--json").stdout
    assert json.loads(again)["turns"] == 8  # the same tenant's sessions, continued
    clash = run_example("redis_bot.py", "--redis-url", f"{redis_url}?tenant=url-bot",
                        "--tenant", "other", "--sessions", "1", "--turns", "1", check=False)
    assert clash.returncode == 2 and "give the tenant once" in clash.stderr, clash.stderr


@pytest.mark.redis
def test_redis_bot_leaves_page_reading_to_queue_workers(redis_url: str) -> None:
    proc = run_example("redis_bot.py", "--redis-url", redis_url, "--sessions", "3",
                       "--turns", "40", "--codec", "bundled", "--recollect", "queue",
                       "--json")
    queue = json.loads(proc.stdout)["queue"]
    assert queue["waiting"] >= 3 and queue["taken"] == queue["dead"] == 0
    refused = run_example("redis_bot.py", "--redis-url", redis_url, "--recollect", "queue",
                          check=False)
    assert refused.returncode == 2 and "needs --codec bundled" in refused.stderr
