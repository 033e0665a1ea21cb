"""tfgpt serve over real HTTP: TF-Serving-compatible predict/status, completions (+SSE), 4xx paths.

The OpenAI API through the official client is in test_openai_api.py."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import tfgpt

from .helpers import CAP, MAX_BODY  # what the session's server fixture is started with


def test_health_and_status(server):
    assert requests.get(f"{server}/healthz").json() == {"status": "ok", "model": "tiny", "version": 1}
    status = requests.get(f"{server}/v1/models/tiny").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    assert requests.get(f"{server}/v1/models/other").status_code == 404
    meta = requests.get(f"{server}/v1/models/tiny/metadata").json()
    assert set(meta["signatures"]) == {"serving_default", "complete", "logits", "generate_ids"}


def test_predict_row_and_columnar_match_keras(server, keras_model):
    model, tok = keras_model
    prompts = ["ROMEO:", "The quick"]
    expected = [tfgpt.generate(model, tok, p, max_new_tokens=6, temperature=0) for p in prompts]
    rows = requests.post(f"{server}/v1/models/tiny:predict",
                      json={"instances": [{"prompts": p, "max_new_tokens": 6} for p in prompts]}, timeout=60)
    assert rows.status_code == 200, rows.text
    assert [r["completions"] for r in rows.json()["predictions"]] == expected
    cols = requests.post(f"{server}/v1/models/tiny:predict",
                      json={"inputs": {"prompts": prompts, "max_new_tokens": 6}}, timeout=60)
    assert cols.json()["outputs"]["completions"] == expected
    assert len(cols.json()["outputs"]["ids"][0]) == 6


def test_predict_logits_and_generate_ids_signatures(server, keras_model):
    model, _ = keras_model
    r = requests.post(f"{server}/v1/models/tiny:predict",
                   json={"signature_name": "logits", "instances": [[1, 2, 3]]}, timeout=60)
    assert r.status_code == 200, r.text
    logits = r.json()["predictions"][0]["logits"]
    assert abs(logits[-1][0] - float(model(__import__("numpy").array([[1, 2, 3]], "int32"))[0, -1, 0])) < 1e-5
    g = requests.post(f"{server}/v1/models/tiny:predict",
                   json={"signature_name": "generate_ids", "inputs": {"ids": [[1, 2, 3]], "max_new_tokens": 4}})
    assert len(g.json()["outputs"]["ids"][0]) == 4


def test_completions_and_streaming(server, keras_model):
    model, tok = keras_model
    expected = tfgpt.generate(model, tok, "ROMEO:", max_new_tokens=12, temperature=0)
    r = requests.post(f"{server}/v1/completions", json={"prompt": "ROMEO:", "max_tokens": 12}, timeout=60)
    assert r.json()["choices"][0]["text"] == expected
    with requests.post(f"{server}/v1/completions", json={"prompt": "ROMEO:", "max_tokens": 12, "stream": True},
                       stream=True, timeout=60) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        lines = [line.decode() for line in s.iter_lines()]
        events = [line[len("data: "):] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == expected


def _stream(server: str, body: dict) -> tuple[int, list[str]]:
    with requests.post(f"{server}/v1/completions", json={**body, "stream": True}, stream=True, timeout=60) as s:
        lines = [line.decode() for line in s.iter_lines()] if s.status_code == 200 else []
        return s.status_code, [line[len("data: "):] for line in lines if line.startswith("data: ")]


def _texts(events: list[str]) -> list[str]:
    return [json.loads(e)["choices"][0]["text"] for e in events[:-1]]


def test_streaming_rejects_a_bad_prompt_with_400_and_wraps_the_largest_seed(server):
    r = requests.post(f"{server}/v1/completions", json={"prompt": "ROMEO: \u2603", "stream": True}, timeout=60)
    assert r.status_code == 400 and "(U+2603) at position" in r.json()["error"]["message"]  # not 200 + an error event
    body = {"prompt": "ROMEO:", "max_tokens": CAP, "temperature": 1.0, "seed": 2**31 - 1}
    status, events = _stream(server, body)
    assert status == 200 and events[-1] == "[DONE]"
    pieces = [json.loads(e) for e in events[:-1]]
    assert all("choices" in p for p in pieces), pieces  # no error event: the per-chunk seed wraps into int32
    assert _texts(_stream(server, body)[1]) == _texts(events)  # reproducible for a seed (ids and times differ)
    status, events = _stream(server, {"prompt": "ROMEO:", "max_tokens": 0})
    assert status == 200 and len(events) == 2 and events[-1] == "[DONE]"
    assert json.loads(events[0])["choices"][0] == {"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}


BAD = [
    ("/v1/completions", b"{not json", 400, "malformed JSON"),
    ("/v1/completions", {"max_tokens": 3}, 400, "missing field 'prompt'"),
    ("/v1/completions", {"prompt": 5}, 400, "'prompt' must be"),
    ("/v1/completions", {"prompt": "ROMEO:", "max_tokens": "many"}, 400, "'max_tokens' must be an integer"),
    ("/v1/completions", {"prompt": "ROMEO:", "max_tokens": CAP + 1}, 400, "above this server's cap"),
    ("/v1/completions", {"prompt": "ROMEO:", "colour": 1}, 400, "unknown field"),
    ("/v1/completions", {"prompt": "ROMEO: \u2603"}, 400, "prompt 0: 1 character(s) not in the char vocabulary"),
    ("/v1/completions", {"prompt": "\ud800"}, 400, "not valid UTF-8"),
    ("/v1/completions", {"prompt": ""}, 400, "no tokens"),
    ("/v1/completions", {"prompt": "x" * MAX_BODY}, 413, "larger than"),
    ("/v1/models/tiny:predict", {"instances": [1]}, 400, "must be"),
    ("/v1/models/tiny:predict", {"inputs": {"prompts": [["a"]]}}, 400, "shape"),
    ("/v1/models/tiny:predict", {"inputs": {"prompt": ["a"]}}, 400, "unknown input"),
    ("/v1/models/tiny:predict", {"instances": [], "inputs": {}}, 400, "exactly one"),
    ("/v1/models/tiny:predict", {"signature_name": "nope", "inputs": {"prompts": ["a"]}}, 400, "unknown signature"),
    ("/v1/models/tiny:predict", {"signature_name": "logits", "inputs": {"ids": [[999]]}}, 400, "ids must be in"),
    ("/v1/models/tiny:classify", {"inputs": {}}, 404, "only ':predict'"),
    ("/v1/completions", {"prompt": "ROMEO:", "max_tokens": 3_000_000_000}, 400, "max_tokens 3000000000 is above"),
    ("/v1/completions", {"prompt": "ROMEO:", "seed": 2**31}, 400, "'seed' must be in [-2147483648, 2147483647]"),
    ("/v1/completions", {"prompt": "ROMEO:", "top_k": 10**30}, 400, "'top_k' must be in [0, 2147483647]"),
    ("/v1/completions", {"prompt": "ROMEO:", "temperature": 10**400}, 400, "'temperature' must be a finite number"),
    ("/v1/completions", b'{"prompt": "ROMEO:", "temperature": NaN}', 400, "'temperature' must be a finite number"),
    ("/v1/completions", b'{"prompt": "ROMEO:", "temperature": 1e400}', 400, "'temperature' must be a finite number"),
    ("/v1/models/tiny:predict", {"signature_name": "logits", "inputs": {"ids": [[1, 2], [3]]}}, 400,
     "'ids' is ragged"),
    ("/v1/models/tiny:predict", {"signature_name": "logits", "inputs": {"ids": [[2**40]]}}, 400,
     "'ids' is out of the int32 range"),
    ("/v1/completions", b"[" * 4000, 400, "nested more than"),  # json.loads: RecursionError
    ("/v1/models/tiny:predict", {"instances": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
     400, "nested more than"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD, ids=[f"{b[2]}-{b[3]}" for b in BAD])
def test_bad_requests_get_clear_4xx_and_server_keeps_serving(server, path, body, status, message):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()  # json.dumps escapes lone surrogates
    r = requests.post(f"{server}{path}", data=data, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]  # OpenAI's {"message", ...} on its routes, TF Serving's string on the others
    assert message in (error["message"] if path == "/v1/completions" else error)
    assert requests.get(f"{server}/healthz").status_code == 200


def test_concurrent_requests_all_succeed(server):
    def one(i: int) -> int:
        body = {"prompt": "ROMEO:", "max_tokens": 4, "temperature": 0.8, "seed": i}
        return requests.post(f"{server}/v1/completions", json=body, timeout=120).status_code

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(one, i) for i in range(16)]
        health = requests.get(f"{server}/healthz", timeout=30).status_code  # answered while the pool works
        codes = [f.result() for f in futures]
    assert codes == [200] * 16 and health == 200


def test_serves_an_export_whose_tokenizer_uses_tf_text_ops(special_export, special_server):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(next(special_export.glob("savedmodel/*/*/saved_model.pb")).read_bytes())
    graph = proto.meta_graphs[0].graph_def
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert "RegexSplitWithOffsets" in ops  # the server process must register TF-Text ops to load this

    model, tok = tfgpt.load(special_export.parent / "run")
    expected = tfgpt.generate(model, tok, "ROMEO:", max_new_tokens=6, temperature=0)
    r = requests.post(f"{special_server}/v1/completions", json={"prompt": "ROMEO:", "max_tokens": 6}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == expected


def test_a_port_in_use_is_one_line_before_the_model_loads(tmp_path, capsys):
    """`tfgpt serve` on a busy port: exit 2 with a line naming host and port, before any export is read
    (the export here does not even exist, so reaching the load would give another error)."""
    import socket

    from tfgpt.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", "--export", str(tmp_path / "none"), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"tfgpt serve: error: --host 127.0.0.1 --port {port}: 127.0.0.1:{port} is in use "
                   "(another server?); choose another --port")


def test_the_start_up_line_says_what_is_served_where(server, startup):
    port = server.rsplit(":", 1)[1]
    lines = startup[server].splitlines()
    assert f"tfgpt serve: serving tiny v1 on http://127.0.0.1:{port} (TF Serving REST, OpenAI /v1/completions, " \
           "/v1/chat/completions)" in lines
    assert lines.index(next(x for x in lines if x.startswith("tfgpt serve: serving"))) < \
        lines.index(next(x for x in lines if "Uvicorn running" in x))  # before uvicorn starts


def test_tf_serving_versioned_urls(server):
    assert requests.get(f"{server}/v1/models/tiny/versions/1").json() == requests.get(f"{server}/v1/models/tiny").json()
    assert requests.get(f"{server}/v1/models/tiny/versions/1/metadata").json() == \
        requests.get(f"{server}/v1/models/tiny/metadata").json()
    body = {"inputs": {"prompts": ["ROMEO:"], "max_new_tokens": 3}}
    r = requests.post(f"{server}/v1/models/tiny/versions/1:predict", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json() == requests.post(f"{server}/v1/models/tiny:predict", json=body, timeout=60).json()
    other = "model 'tiny' has no version '2' here (this server serves version 1)"
    for r in (requests.get(f"{server}/v1/models/tiny/versions/2"),
              requests.get(f"{server}/v1/models/tiny/versions/2/metadata"),
              requests.post(f"{server}/v1/models/tiny/versions/2:predict", json=body, timeout=60)):
        assert (r.status_code, r.json()) == (404, {"error": other})
    r = requests.post(f"{server}/v1/models/other/versions/1:predict", json=body, timeout=60)
    assert (r.status_code, r.json()) == (404, {"error": "model 'other' is not served here (this server serves 'tiny')"})


def test_unknown_paths_and_wrong_methods_get_tf_servings_error_shape(server):
    for r, status, error in ((requests.get(f"{server}/nope"), 404, "Not Found"),
                             (requests.get(f"{server}/v1/models/tiny/versions/1/labels"), 404, "Not Found"),
                             (requests.post(f"{server}/healthz"), 405, "Method Not Allowed"),
                             (requests.delete(f"{server}/v1/models/tiny"), 405, "Method Not Allowed")):
        assert (r.status_code, r.json()) == (status, {"error": error})
    r = requests.get(f"{server}/v1/completions")  # an OpenAI route keeps OpenAI's shape
    assert r.status_code == 405 and r.json()["error"]["message"] == "Method Not Allowed"


@pytest.mark.parametrize(("flags", "message"), [
    (["--port", "99999"], "--port 99999: must be in [0, 65535]"),
    (["--port", "-1"], "--port -1: must be in [0, 65535]"),
    (["--workers", "0"], "--workers 0: must be at least 1 (threads running the model)"),
    (["--max-new-tokens-cap", "0"], "--max-new-tokens-cap 0: must be at least 1 (tokens a request may ask for)"),
    (["--max-body-bytes", "-5"], "--max-body-bytes -5: must be at least 1 (bytes of a request body)"),
    (["--batch-rows", "0"], "--batch-rows 0: must be at least 1 (prompts per shared decode step)"),
    (["--batch-window-ms", "-1"], "--batch-window-ms -1.0: must be in [0, 1000] (how long a request waits for "
                                  "others to batch with)"),
])
def test_out_of_range_numbers_are_one_line_before_the_model_loads(tmp_path, capsys, flags, message):
    from tfgpt.cli import main

    assert main(["serve", "--export", str(tmp_path / "none"), *flags]) == 2  # the export is never read
    assert capsys.readouterr().err.strip() == f"tfgpt serve: error: {message}"
