"""tfgpt.serve.batching: concurrent completions merged into `complete` calls give each request its own output.

In process (:class:`Batcher` over the session's export, a wide window so that merging is certain) and
through a real ``tfgpt serve`` on 127.0.0.1 with concurrent HTTP clients."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from tfgpt.serve.batching import Batcher, request_rows
from tfgpt.serve.errors import BadRequest

#: (prompt, max_new_tokens, temperature, top_k, seed): greedy and sampled, different lengths and widths.
REQUESTS = [("ROMEO:", 12, 1.5, 0, 11), ("The quick brown", 5, 0.0, 0, 0), ("w", 20, 1.0, 4, 3),
            ("hello world", 1, 1.0, 0, 5), ("JULIET: what light", 9, 2.0, 0, 11), ("fox", 16, 1.2, 3, -7)]


def _inputs(prompt: str, n: int, temperature: float, top_k: int, seed: int) -> dict:
    return {"prompts": [prompt], "max_new_tokens": n, "temperature": temperature, "top_k": top_k, "seed": seed}


def _batched(model, requests_: list[dict], **options) -> tuple[list, int]:
    """Each request's outputs through one :class:`Batcher`, all submitted at once; and its call count."""
    batcher = Batcher(model, **options)

    async def run() -> list:
        return await asyncio.gather(*(batcher.predict(model.feeds("serving_default", r)) for r in requests_),
                                    return_exceptions=True)

    try:
        return asyncio.run(run()), batcher.calls
    finally:
        batcher.close()


def test_merged_requests_get_what_each_gets_alone(exported_model):
    requests_ = [_inputs(*r) for r in REQUESTS] + [{"prompts": ["ROMEO:", "w", "fox"], "max_new_tokens": 7,
                                                    "temperature": 1.0, "seed": 2}]
    got, calls = _batched(exported_model, requests_, max_rows=16, window_s=0.5)
    assert calls == 1  # 9 rows, all in the window: one `complete` call
    varied = 0
    for inputs, out in zip(requests_, got, strict=True):
        alone = exported_model.predict("serving_default", inputs)  # its own serving_default call
        assert out["ids"].tolist() == alone["ids"].tolist()
        assert out["completions"].tolist() == alone["completions"].tolist()
        assert out["num_tokens"].tolist() == alone["num_tokens"].tolist()
        varied += len(set(alone["ids"][0].tolist())) > 2
    assert varied >= 3  # outputs that could differ: the comparison can fail


def test_a_batch_is_at_most_max_rows_and_takes_requests_in_order(exported_model):
    requests_ = [_inputs(p, 3, 1.0, 0, i) for i, p in enumerate(["ROMEO:", "w", "fox", "hello", "the"])]
    got, calls = _batched(exported_model, requests_, max_rows=2, window_s=0.5)
    assert calls == 3  # 2 + 2 + 1
    for inputs, out in zip(requests_, got, strict=True):
        assert out["ids"].tolist() == exported_model.predict("serving_default", inputs)["ids"].tolist()


def test_a_bad_prompt_fails_alone_and_its_neighbours_still_complete(exported_model):
    requests_ = [_inputs("ROMEO:", 6, 1.0, 0, 1), _inputs("ROMEO: \u00e9\u00e9", 6, 0.0, 0, 0),
                 _inputs("w", 6, 0.0, 0, 0)]
    got, calls = _batched(exported_model, requests_, max_rows=16, window_s=0.5)
    assert calls == 4  # the merged call failed; each request then ran alone
    assert isinstance(got[1], BadRequest) and "'é'" in str(got[1])
    for i in (0, 2):
        assert got[i]["ids"].tolist() == exported_model.predict("serving_default", requests_[i])["ids"].tolist()


def test_request_rows_wrap_the_row_seeds_as_the_graph_does():
    feeds = {"prompts": np.array([b"a", b"b", b"c"], object), "max_new_tokens": np.int32(4),
             "temperature": np.float32(1.0), "top_k": np.int32(2), "seed": np.int32(2**31 - 2)}
    rows = request_rows(feeds)
    assert rows["seed"].tolist() == [2**31 - 2, 2**31 - 1, -(2**31)] and rows["seed"].dtype == np.int32
    assert rows["top_k"].tolist() == [2, 2, 2] and rows["temperature"].dtype == np.float32


@pytest.mark.parametrize("route", ["predict", "openai"])
def test_concurrent_http_clients_get_what_they_get_alone(server, route):
    """8 clients at once against the real server (batching on by default), then each request alone."""
    def ask(r: tuple) -> str:
        prompt, n, temperature, top_k, seed = r
        if route == "predict":
            body = {"instances": [{"prompts": prompt, "max_new_tokens": n, "temperature": temperature,
                                   "top_k": top_k, "seed": seed}]}
            reply = requests.post(f"{server}/v1/models/tiny:predict", json=body, timeout=60)
            assert reply.status_code == 200, reply.text
            return reply.json()["predictions"][0]["completions"]
        body = {"model": "tiny", "prompt": prompt, "max_tokens": n, "temperature": temperature, "seed": seed}
        reply = requests.post(f"{server}/v1/completions", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        return reply.json()["choices"][0]["text"]

    batch = (REQUESTS + REQUESTS[:2]) if route == "predict" else [r for r in REQUESTS if r[3] == 0] * 2
    with ThreadPoolExecutor(len(batch)) as pool:
        together = list(pool.map(ask, batch))
    assert together == [ask(r) for r in batch]


def test_the_server_batches_unless_batch_rows_is_one_or_the_export_lacks_complete(exported_model, monkeypatch):
    from tfgpt.serve.app import Server

    assert isinstance(Server(exported_model, 1, 1024, batch_rows=16).batcher, Batcher)
    assert Server(exported_model, 1, 1024, batch_rows=1).batcher is None
    older = {k: v for k, v in exported_model.specs.items() if k != "complete"}  # an export from before `complete`
    monkeypatch.setattr(exported_model, "specs", older)
    assert Server(exported_model, 1, 1024, batch_rows=16).batcher is None
