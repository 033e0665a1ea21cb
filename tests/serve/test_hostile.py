"""Hostile requests to one real ``tfgpt serve`` (uvicorn, 127.0.0.1): hypothesis-fuzzed bodies over the REST
schema, a fixed corpus of malformed, huge, deep, odd-text and oversized requests, slow-loris and idle clients.

Every answer must be a 200 with a valid body or a 4xx with a JSON error message within ``ANSWER_S`` (10 s),
never a 5xx or a dropped connection (:mod:`tests.serve.hostile`); the server stays up and its RSS bounded.
The export is byte-level BPE (``bpe_export``), so any text reaches the model and the in-graph BPE merges
(the 8 KB unbroken word is their worst case); a char vocabulary would turn most prompts away up front.
"""

from __future__ import annotations

import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings

from tfgpt.serve.jsonio import BODY_TIMEOUT_S, MAX_BATCH
from tfgpt.serve.timeouts import HEADER_TIMEOUT_S

from .helpers import rss_bytes, serve_process
from .hostile import ANSWER_S, SlowClients, Tally, raw_exchange, send_and_judge
from .strategies import REQUESTS

pytestmark = [pytest.mark.reliability, pytest.mark.slow]  # one server over a fresh BPE export: ~30 s in all

TEST = "tests/serve/test_hostile.py"
MAX_BODY = 1 << 20  # the server's default --max-body-bytes
CMPL, CHAT, PREDICT = "/v1/completions", "/v1/chat/completions", "/v1/models/tinybpe:predict"
TALLY = Tally()
RSS: dict[str, int] = {}


SLOW_BOUND = max(HEADER_TIMEOUT_S, BODY_TIMEOUT_S) + 5  # the server must end a slow client within this
IDLE = 200
SLOW: dict[str, SlowClients] = {}


@pytest.fixture(scope="module")
def hostile(bpe_export):
    """The server, warmed up (one completion, one predict) before its RSS is read; then :class:`SlowClients`
    (two slow-loris, ``IDLE`` idle connections) start, and a normal request must be answered beside them
    within 5 s. The slow clients run on while the tests below send their requests."""
    with serve_process(bpe_export, "--max-new-tokens-cap", "8", "--workers", "2") as served:
        for path, body in ((CMPL, {"prompt": "hello", "max_tokens": 8}), (PREDICT, {"instances": ["hi"]})):
            assert requests.post(served.base + path, json=body, timeout=60).status_code == 200
        RSS["before"] = rss_bytes(served.pid)
        SLOW["clients"] = SlowClients(int(served.base.rsplit(":", 1)[1]), IDLE, SLOW_BOUND)
        start = time.monotonic()
        ok = requests.post(served.base + CMPL, json={"prompt": "hi", "max_tokens": 4}, timeout=5)
        TALLY.add(f"request beside {IDLE} idle connections", ok.status_code, time.monotonic() - start)
        assert ok.status_code == 200
        yield served


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(request=REQUESTS)
def test_fuzzed_bodies_get_a_200_or_a_clear_4xx(hostile, request):
    path, body = request
    send_and_judge(TALLY, "fuzzed (hypothesis)", hostile.base, path, body)


WORD = "".join(chr(ord("a") + (i * 7919) % 26) for i in range(8192))  # 8 KB, no spaces, few repeats
CORPUS = [
    # (kind, path, body, raw?, expected status or None for "200 or 4xx")
    ("malformed JSON", CMPL, b'{"prompt": ', True, 400),
    ("malformed JSON", PREDICT, b"{'instances': ['a']}", True, 400),
    ("malformed JSON", CHAT, b"", True, 400),
    ("malformed JSON", CMPL, b'{"prompt": "a",}', True, 400),
    ("huge body", CMPL, b'{"prompt": "' + b"x" * (2 * MAX_BODY) + b'"}', True, 413),
    ("huge body", PREDICT, b"[" * (MAX_BODY + 1), True, 413),
    ("deep nesting", CMPL, b"[" * 100_000, True, 400),
    ("deep nesting", PREDICT, b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", True, 400),
    ("deep nesting", CHAT, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, True, 400),
    ("wrong types", CMPL, {"prompt": {"text": "hi"}}, False, 400),
    ("wrong types", CMPL, ["prompt", "hi"], False, 400),
    ("wrong types", CHAT, {"messages": "hi"}, False, 400),
    ("wrong types", PREDICT, {"instances": "hi"}, False, 400),
    ("wrong types", PREDICT, {"inputs": {"prompts": [1, 2]}}, False, 400),
    ("wrong types", PREDICT, {"signature_name": "logits", "inputs": {"ids": [["a"]]}}, False, 400),
    ("NaN/Infinity", CMPL, b'{"prompt": "a", "temperature": NaN}', True, 400),
    ("NaN/Infinity", CMPL, b'{"prompt": "a", "max_tokens": Infinity}', True, 400),
    ("NaN/Infinity", PREDICT, b'{"inputs": {"prompts": ["a"], "temperature": -Infinity}}', True, 400),
    ("NaN/Infinity", PREDICT, b'{"signature_name": "logits", "inputs": {"ids": [[NaN]]}}', True, 400),
    ("invalid UTF-8", CMPL, b'{"prompt": "a\xff\xfeb"}', True, 400),
    ("invalid UTF-8", PREDICT, b'{"instances": ["\xc0\xaf"]}', True, 400),
    ("invalid UTF-8", CHAT, b'{"messages": [{"role": "user", "content": "\xe2\x82"}]}', True, 400),
    ("lone surrogates", CMPL, b'{"prompt": "\\ud800"}', True, 400),
    ("lone surrogates", CMPL, b'{"prompt": "a", "\\ud800": 1}', True, 400),
    ("lone surrogates", CMPL, b'{"prompt": "a", "stop": "\\udfff", "model": "\\ud800"}', True, 404),
    ("lone surrogates", CHAT, b'{"messages": [{"role": "\\ud800", "content": "a"}]}', True, 400),
    ("lone surrogates", PREDICT, b'{"inputs": {"prompts": ["a"], "\\ud800": 1}}', True, 400),
    ("lone surrogates", PREDICT, b'{"signature_name": "\\udfff", "instances": ["a"]}', True, 400),
    ("NUL chars", CMPL, {"prompt": "a\x00b", "stop": "\x00", "max_tokens": 4}, False, 200),
    ("NUL chars", PREDICT, {"instances": ["\x00"]}, False, 200),
    ("NUL chars", CMPL, b'{"prompt": "a\x00"}', True, 400),
    ("NUL chars", CMPL, {"prompt": "a", "\x00": 1}, False, 400),
    ("giant max_new_tokens", CMPL, {"prompt": "a", "max_tokens": 10**100}, False, 400),
    ("giant max_new_tokens", CHAT, {"messages": [{"role": "user", "content": "a"}], "max_tokens": 2**31}, False, 400),
    ("giant max_new_tokens", PREDICT, {"inputs": {"prompts": ["a"], "max_new_tokens": 2**31 - 1}}, False, 400),
    ("negative numbers", CMPL, {"prompt": "a", "max_tokens": -1}, False, 400),
    ("negative numbers", CMPL, {"prompt": "a", "seed": -(2**40), "top_k": -5}, False, 400),
    ("negative numbers", PREDICT, {"inputs": {"prompts": ["a"], "max_new_tokens": -1}}, False, 400),
    ("negative numbers", PREDICT, {"signature_name": "logits", "inputs": {"ids": [[-1]]}}, False, 400),
    ("thousands of prompts", CMPL, {"prompt": [f"prompt {i}" for i in range(MAX_BATCH)], "max_tokens": 8}, False, 200),
    ("thousands of prompts", CMPL, {"prompt": ["a"] * 5000}, False, 413),
    ("thousands of prompts", PREDICT, {"instances": [{"prompts": "a"}] * 5000}, False, 413),
    ("thousands of prompts", PREDICT, {"inputs": {"prompts": []}}, False, 400),
    ("8 KB unbroken word", CMPL, {"prompt": WORD, "max_tokens": 8}, False, 200),
    ("8 KB unbroken word", CMPL, {"prompt": "x" * 8192, "max_tokens": 8}, False, 200),
    ("8 KB unbroken word", PREDICT, {"instances": ["é" * 4096, "😀" * 2048]}, False, 200),
    ("8 KB unbroken word", CHAT, {"messages": [{"role": "user", "content": WORD}]}, False, 200),
]


def test_a_fixed_hostile_corpus_gets_a_200_or_a_clear_4xx(hostile):
    """Each request of :data:`CORPUS` gets the expected answer (a 4xx with a JSON error, or a 200) in time."""
    for kind, path, body, raw, expected in CORPUS:
        r = send_and_judge(TALLY, kind, hostile.base, path, body, raw=raw)
        assert r.status_code == expected, (kind, path, r.status_code, r.text[:300])
    chunked = (b'{"prompt": "' + b"x" * 65536 for _ in range(40))  # no content-length: counted as it streams
    send_and_judge(TALLY, "huge body", hostile.base, CMPL, chunked, raw=True)
    assert requests.get(f"{hostile.base}/healthz", timeout=ANSWER_S).status_code == 200


def test_malformed_http_is_answered_or_dropped(hostile):
    """Garbage where HTTP is expected: uvicorn answers a 4xx (its own plain-text one) or closes, in time."""
    port = int(hostile.base.rsplit(":", 1)[1])
    for request in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n",  # a TLS hello
                    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
                    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                    b"GET /healthz\r\n\r\n"):  # HTTP/0.9
        start = time.monotonic()
        answer = raw_exchange(port, request)
        seconds = time.monotonic() - start
        status = int(answer.split(b" ")[1]) if answer.startswith(b"HTTP/1.1 ") else 400  # dropped: a refusal
        TALLY.add("malformed HTTP", status, seconds)
        assert 400 <= status < 500 and seconds <= ANSWER_S, (request[:40], answer[:200], seconds)


def test_slow_loris_and_idle_clients_are_ended_in_time(hostile):
    """The slow clients :func:`hostile` started (while the tests above ran): the server dropped each slow-loris
    (or answered its body 408) and closed every idle connection, within ``SLOW_BOUND`` s of their start."""
    ends, closed, by = SLOW["clients"].finish()
    for i in range(IDLE):  # '4xx': closed by the server; '200': still open
        TALLY.add("idle connections", 400 if i < closed else 200, by)
    for kind, (how, seconds) in ends.items():
        TALLY.add(kind, 408 if how.startswith("HTTP/1.1 408") else 400 if how == "dropped" else 200, seconds)
    assert closed == IDLE, f"{IDLE - closed} of {IDLE} idle connections still open after {SLOW_BOUND} s"
    for kind, (how, seconds) in ends.items():
        assert how == "dropped" or how.startswith("HTTP/1.1 408"), (kind, how, seconds)


def test_the_server_stays_up_and_its_memory_bounded(hostile, figures):
    """After everything above: /healthz answers and the RSS grew under 50% from after the warm-up.
    Records the figures (this test runs last in the module)."""
    assert requests.get(f"{hostile.base}/healthz", timeout=ANSWER_S).json()["status"] == "ok"
    before, after = RSS["before"], rss_bytes(hostile.pid)
    figures("50-hostile", title="Hostile requests to tfgpt serve",
            columns=["kind", "tried", "4xx", "200", "5xx", "max answer s"], rows=TALLY.table(), test=TEST,
            note=f"One server (byte-level BPE export, --max-new-tokens-cap 8, 1 MiB body limit). Every answer "
                 f"within {ANSWER_S:g} s. Slow-loris and idle clients: '4xx' counts those the server dropped or "
                 f"answered 408 within {SLOW_BOUND:g} s (header timeout {HEADER_TIMEOUT_S:g} s, body "
                 f"{BODY_TIMEOUT_S:g} s), '200' those it still held; malformed HTTP: uvicorn's plain-text 400, or "
                 f"a drop. Server RSS {before / 2**20:.0f} MiB after warm-up, {after / 2**20:.0f} MiB after "
                 f"({(after - before) / before:+.1%}).")
    assert after < 1.5 * before, (before, after)
