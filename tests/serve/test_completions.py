"""tfgpt.serve.completions: the /v1/completions body as serving_default inputs, and the non-streamed reply."""

from __future__ import annotations

import numpy as np
import pytest

from tfgpt.serve.completions import CompletionRequest, completion_reply, parse_completion_body
from tfgpt.serve.errors import BadRequest


def test_a_full_body_maps_to_the_signature_inputs():
    body = {"prompt": "ROMEO:", "max_tokens": 8, "temperature": 0.7, "top_k": 5, "seed": 3, "stream": True}
    assert parse_completion_body(body) == CompletionRequest(
        {"prompts": ["ROMEO:"], "max_new_tokens": 8, "temperature": 0.7, "top_k": 5, "seed": 3}, True, True)


def test_a_list_of_prompts_and_max_new_tokens_for_max_tokens():
    assert parse_completion_body({"prompt": ["a", "b"], "max_new_tokens": 2}) == CompletionRequest(
        {"prompts": ["a", "b"], "max_new_tokens": 2}, single=False, stream=False)
    assert parse_completion_body({"prompt": "a", "max_tokens": 1, "max_new_tokens": 2}).inputs["max_new_tokens"] == 1


def test_values_are_passed_on_unchecked_for_the_signature_to_type():
    assert parse_completion_body({"prompt": "a", "max_tokens": "many"}).inputs == {"prompts": ["a"],
                                                                                   "max_new_tokens": "many"}


@pytest.mark.parametrize(("body", "message"), [
    ("ROMEO:", "the request body must be a JSON object"),
    ({"prompt": "a", "colour": 1, "best_of": 2},
     "unknown field(s) best_of, colour; allowed: max_new_tokens, max_tokens, prompt, seed, stream, temperature, top_k"),
    ({"max_tokens": 3}, "missing field 'prompt'"),
    ({"prompt": 5}, "'prompt' must be a string or a non-empty list of strings"),
    ({"prompt": []}, "'prompt' must be a string or a non-empty list of strings"),
    ({"prompt": ["a", 1]}, "'prompt' must be a string or a non-empty list of strings"),
    ({"prompt": "a", "stream": "yes"}, "'stream' must be true or false"),
])
def test_bad_bodies(body, message):
    with pytest.raises(BadRequest) as e:
        parse_completion_body(body)
    assert str(e.value) == message and e.value.status == 400


def test_completion_reply_numbers_the_choices():
    out = {"completions": np.array([b" hi", b"\n"], dtype=object), "num_tokens": np.array([3, 1], np.int32),
           "ids": np.array([[1, 2, 3], [4, -1, -1]], np.int32)}
    reply = completion_reply(out, "tiny")
    assert reply == {"model": "tiny", "choices": [{"index": 0, "text": " hi", "num_tokens": 3},
                                                  {"index": 1, "text": "\n", "num_tokens": 1}]}
    assert type(reply["choices"][0]["num_tokens"]) is int  # JSON-ready, not np.int32
