"""tfgpt.serve.completions: OpenAI's completions and chat bodies, checked into serving_default inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tfgpt.serve.completions import CompletionRequest, FieldError, parse_chat_body, parse_completion_body
from tfgpt.serve.rest import parse_predict_body

CAP = 31


def test_a_full_completions_body_maps_to_the_signature_inputs():
    body = {"model": "tiny", "prompt": "ROMEO:", "max_tokens": 8, "temperature": 0.7, "top_k": 5, "seed": 3,
            "stream": True, "stream_options": {"include_usage": True}, "stop": ["\n", ""], "user": "u",
            "top_p": 1.0, "n": 1, "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}, "echo": False,
            "best_of": 1, "logprobs": None, "suffix": None}
    assert parse_completion_body(body, CAP) == CompletionRequest(
        "tiny", ["ROMEO:"], [], {"max_new_tokens": 8, "temperature": 0.7, "top_k": 5, "seed": 3}, ["\n"], True, True)


def test_defaults_nulls_and_the_older_max_new_tokens():
    assert parse_completion_body({"prompt": ["a", "b"]}, CAP) == CompletionRequest(
        None, ["a", "b"], [], {}, [], False, False)
    assert parse_completion_body({"prompt": "a", "max_tokens": None, "temperature": None}, CAP).sampling == {}
    assert parse_completion_body({"prompt": "a", "max_new_tokens": 2}, CAP).sampling == {"max_new_tokens": 2}
    assert parse_completion_body({"prompt": "a", "max_tokens": 1, "max_new_tokens": 2}, CAP).sampling == {
        "max_new_tokens": 1}
    assert parse_completion_body({"prompt": "a", "stop": "x"}, CAP).stops == ["x"]


def test_a_chat_body_gives_role_text_pairs():
    body = {"model": "tiny", "max_completion_tokens": 4, "response_format": {"type": "text"}, "tool_choice": "none",
            "tools": [], "parallel_tool_calls": False, "logprobs": False, "top_logprobs": None,
            "messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi", "name": "a"},
                         {"role": "assistant", "content": " Hello."},
                         {"role": "user", "content": [{"type": "text", "text": "Say "},
                                                      {"type": "text", "text": "x"}]}]}
    req = parse_chat_body(body, CAP)
    assert req.messages == [("system", "Be brief."), ("user", "Hi"), ("assistant", " Hello."), ("user", "Say x")]
    assert req.sampling == {"max_new_tokens": 4} and req.prompts == []


BAD = [
    (parse_completion_body, "ROMEO:", None, "the request body must be a JSON object"),
    (parse_completion_body, {"prompt": "a", "colour": 1, "zeal": 2}, "colour", "unknown field(s) colour, zeal; "
     "this server takes best_of, echo, frequency_penalty, logit_bias, logprobs, max_new_tokens, max_tokens, model, n"),
    (parse_completion_body, {"max_tokens": 3}, "prompt", "missing field 'prompt'"),
    (parse_completion_body, {"prompt": 5}, "prompt", "'prompt' must be a string or a non-empty list of strings"),
    (parse_completion_body, {"prompt": []}, "prompt", "'prompt' must be a string or a non-empty list of strings"),
    (parse_completion_body, {"prompt": [1, 2]}, "prompt", "'prompt' must be a string or a non-empty list of strings"),
    (parse_completion_body, {"prompt": "a", "stream": "yes"}, "stream", "'stream' must be true or false"),
    (parse_completion_body, {"prompt": ["a", "b"], "stream": True}, "prompt", "streaming takes a single prompt"),
    (parse_completion_body, {"prompt": "a", "max_tokens": "many"}, "max_tokens",
     "'max_tokens' must be an integer, got 'many'"),
    (parse_completion_body, {"prompt": "a", "max_tokens": True}, "max_tokens", "'max_tokens' must be an integer"),
    (parse_completion_body, {"prompt": "a", "max_tokens": 32}, "max_tokens", "max_tokens 32 is above this server's "
     "cap (31)"),
    (parse_completion_body, {"prompt": "a", "max_tokens": -1}, "max_tokens", "'max_tokens' must be in [0, 31], got -1"),
    (parse_completion_body, {"prompt": "a", "max_tokens": "8"}, "max_tokens", "'max_tokens' must be an integer, "
     "got '8'"),
    (parse_completion_body, {"prompt": "a", "max_tokens": -5}, "max_tokens", "'max_tokens' must be in [0, 31], got -5"),
    # the older name: errors name the field the client sent
    (parse_completion_body, {"prompt": "a", "max_new_tokens": "8"}, "max_new_tokens",
     "'max_new_tokens' must be an integer, got '8'"),
    (parse_completion_body, {"prompt": "a", "max_new_tokens": -5}, "max_new_tokens",
     "'max_new_tokens' must be in [0, 31], got -5"),
    (parse_completion_body, {"prompt": "a", "max_new_tokens": 64}, "max_new_tokens",
     "max_new_tokens 64 is above this server's cap (31)"),
    (parse_chat_body, {"messages": [{"role": "user", "content": "a"}], "max_tokens": "8"}, "max_tokens",
     "'max_tokens' must be an integer, got '8'"),
    (parse_completion_body, {"prompt": "a", "top_k": 2**31}, "top_k", "'top_k' must be in [0, 2147483647]"),
    (parse_completion_body, {"prompt": "a", "seed": -(2**31) - 1}, "seed", "'seed' must be in [-2147483648, "),
    (parse_completion_body, {"prompt": "a", "temperature": float("nan")}, "temperature",
     "'temperature' must be a finite number ≥ 0 (0 = greedy), got nan"),
    (parse_completion_body, {"prompt": "a", "temperature": "hot"}, "temperature", "'temperature' must be a number"),
    (parse_completion_body, {"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, "stop",
     "'stop' must be a string or a list of at most 4 strings"),
    (parse_completion_body, {"prompt": "a", "stop": [1]}, "stop", "'stop' must be a string or a list"),
    (parse_completion_body, {"prompt": "a", "stream_options": {"include_usage": True}}, "stream_options",
     "'stream_options' is only allowed with \"stream\": true"),
    (parse_completion_body, {"prompt": "a", "stream": True, "stream_options": {"x": 1}}, "stream_options",
     "'stream_options' takes only"),
    (parse_completion_body, {"prompt": "a", "top_p": 0.9}, "top_p", "top_p 0.9: only 1 is served"),
    (parse_completion_body, {"prompt": "a", "echo": True}, "echo", "echo True: only false is served"),
    (parse_completion_body, {"prompt": "a", "model": 3}, "model", "'model' must be a string"),
    (parse_chat_body, {"messages": []}, "messages", "'messages' must be a non-empty list"),
    (parse_chat_body, {"prompt": "a", "messages": [{"role": "user", "content": "a"}]}, "prompt", "unknown field(s) "
     "prompt"),
    (parse_chat_body, {"messages": [{"role": "user", "content": "a", "tool_call_id": "x"}]}, "messages",
     "messages[0] must be an object with 'role' and 'content'"),
    (parse_chat_body, {"messages": [{"role": "robot", "content": "a"}]}, "messages",
     "messages[0]: role must be one of system, developer, user, assistant, got 'robot'"),
    (parse_chat_body, {"messages": [{"role": [], "content": "a"}]}, "messages",  # was a 500 (unhashable)
     "messages[0]: role must be one of system, developer, user, assistant, got []"),
    (parse_chat_body, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages",
     "messages[0]: content must be a string or a list of text parts"),
    (parse_chat_body, {"messages": [{"role": "system", "content": "a"}]}, "messages",
     "messages[0]: the last message must have role 'user', got 'system'"),
    (parse_chat_body, {"messages": [{"role": "user", "content": "a"}], "max_completion_tokens": 99},
     "max_completion_tokens", "max_completion_tokens 99 is above this server's cap (31)"),
    (parse_chat_body, {"messages": [{"role": "user", "content": "a"}], "logprobs": True}, "logprobs",
     "logprobs True: is not served"),
]


@pytest.mark.parametrize(("parse", "body", "param", "message"), BAD, ids=[b[3][:40] for b in BAD])
def test_bad_bodies_name_the_field(parse, body, param, message):
    with pytest.raises(FieldError) as e:
        parse(body, CAP)
    assert str(e.value).startswith(message) and e.value.status == 400 and e.value.param == param


CHAR_SMALL_CAP = 63  # block_size 64 - 1: the README's char-small
README = Path(__file__).resolve().parents[2] / "serving" / "README.md"


def test_every_documented_request_is_accepted_by_a_block_64_model():
    """serving/README.md's curl bodies parse as their routes read them, and every token count in its
    examples (curl, client.py, the openai client) is within char-small's cap: none is a 400 there."""
    text = README.read_text()
    bodies = [(re.findall(r"localhost:8501(/\S+)", text[:m.start()])[-1], m.group(1))  # the nearest curl's route
              for m in re.finditer(r"-d '(.*?)'", text, flags=re.DOTALL)]
    routes = sorted({route for route, _ in bodies})
    assert routes == ["/v1/chat/completions", "/v1/completions", "/v1/models/tfgpt/versions/1:predict",
                      "/v1/models/tfgpt:predict"]
    counts = []
    for route, raw in bodies:
        body = json.loads(raw)
        if route.endswith(":predict"):
            inputs = parse_predict_body(body).inputs
            counts += [v for k, vs in inputs.items() if k == "max_new_tokens" for v in np.ravel(vs)]
        else:
            (parse_chat_body if "chat" in route else parse_completion_body)(body, CHAR_SMALL_CAP)
            counts += [body[k] for k in ("max_tokens", "max_new_tokens") if k in body]
    counts += [int(n) for n in re.findall(r"(?:--max-new-tokens |max_tokens=)(\d+)", text)]
    assert counts and max(counts) <= CHAR_SMALL_CAP, counts
    assert "max_tokens\": 64" not in text and "is clipped to `block_size - 1`" not in text


def test_more_prompts_than_a_batch_holds_are_a_413():
    """One request cannot hold more than MAX_BATCH prompts (it would hold the model for minutes)."""
    from tfgpt.serve.jsonio import MAX_BATCH

    assert len(parse_completion_body({"prompt": ["a"] * MAX_BATCH}, CAP).prompts) == MAX_BATCH
    with pytest.raises(FieldError) as e:
        parse_completion_body({"prompt": ["a"] * (MAX_BATCH + 1)}, CAP)
    assert e.value.status == 413 and e.value.param == "prompt" and f"at most {MAX_BATCH}" in str(e.value)
