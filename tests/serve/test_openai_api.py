"""tfgpt serve's OpenAI-compatible API, driven by the official ``openai`` client over real HTTP on 127.0.0.1.

The tiny export's char vocabulary cannot spell ``You:``, so its chat prompts are the marker-less
transcript of ``tfgpt chat`` (one line per message); greedy answers are checked against Keras.
"""

from __future__ import annotations

import json

import openai
import pytest
import requests

import tfgpt
from tfgpt.tokenizers import load_tokenizer

PROMPT = "ROMEO:"


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="anything", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tok(tiny_export):
    """The export's own Python tokenizer: what usage must count with."""
    return load_tokenizer(tiny_export / "tokenizer")


@pytest.fixture(scope="module")
def greedy(keras_model):
    model, keras_tok = keras_model
    return lambda prompt, n: tfgpt.generate(model, keras_tok, prompt, max_new_tokens=n, temperature=0,
                                            jit_compile=False)


def test_models_list_and_tf_serving_status_side_by_side(client, server):
    models = client.models.list()
    assert [(m.id, m.object, m.owned_by) for m in models.data] == [("tiny", "model", "tfgpt")]
    assert models.data[0].created > 1_700_000_000  # export.json's created
    assert requests.get(f"{server}/v1/models/tiny").json()["model_version_status"][0]["state"] == "AVAILABLE"


def test_completion_is_keras_greedy_with_openai_fields(client, tok, greedy):
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0)
    expected = greedy(PROMPT, 12)
    assert r.id.startswith("cmpl-") and r.object == "text_completion" and r.model == "tiny" and r.created > 0
    assert [(c.index, c.text, c.logprobs, c.finish_reason) for c in r.choices] == [(0, expected, None, "length")]
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
        len(tok.encode(PROMPT)), len(tok.encode(expected)), len(tok.encode(PROMPT)) + len(tok.encode(expected)))


def test_a_list_of_prompts_and_langchains_neutral_defaults(client, greedy):
    r = client.completions.create(model="tiny", prompt=[PROMPT, "The"], max_tokens=5, temperature=0, top_p=1, n=1,
                                  presence_penalty=0, frequency_penalty=0, logit_bias={}, user="u1", best_of=1)
    assert [c.text for c in r.choices] == [greedy(PROMPT, 5), greedy("The", 5)]
    assert [c.index for c in r.choices] == [0, 1]


def test_streamed_completion_joins_to_the_greedy_one_with_usage_last(client, tok, greedy):
    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text_chunks, last = chunks[:-1], chunks[-1]
    assert "".join(c.choices[0].text for c in text_chunks) == greedy(PROMPT, 20)
    assert [c.choices[0].finish_reason for c in text_chunks] == [None] * (len(text_chunks) - 1) + ["length"]
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("cmpl-")
    assert all(c.usage is None for c in text_chunks) and last.choices == []
    assert last.usage.prompt_tokens == len(tok.encode(PROMPT))
    assert last.usage.completion_tokens == len(tok.encode(greedy(PROMPT, 20)))


def test_stop_strings_cut_both_ways_and_the_stream_sends_nothing_past_them(client, server, greedy):
    full = greedy(PROMPT, 20)
    stop = full[9:11]
    expected = full[: full.find(stop)]
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, temperature=0, stop=[stop, "zzz"])
    assert (r.choices[0].text, r.choices[0].finish_reason) == (expected, "stop")
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 20, "temperature": 0, "stop": stop, "stream": True}
    with requests.post(f"{server}/v1/completions", json=body, stream=True, timeout=60) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        lines = [line.decode() for line in s.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(e["choices"][0]["text"] for e in events) == expected  # no text past the stop string
    assert events[-1]["choices"][0]["finish_reason"] == "stop" and "usage" not in events[-1]


def test_chat_is_the_transcript_tfgpt_chat_would_send(client, tok, greedy):
    messages = [{"role": "system", "content": "The"}, {"role": "user", "content": "hello"},
                {"role": "assistant", "content": " fox"}, {"role": "user", "content": "ROMEO:"}]
    prompt = "The\nhello\n fox\nROMEO:\n"  # no You:/Model: markers: the vocabulary lacks Y; 22 = 32 - 10 tokens
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion"
    assert (r.choices[0].message.role, r.choices[0].message.content) == ("assistant", greedy(prompt, 10))
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(tok.encode(prompt))
    assert r.usage.completion_tokens == len(tok.encode(r.choices[0].message.content))
    stream = client.chat.completions.create(model="tiny", messages=messages, max_completion_tokens=10,
                                            temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].object == "chat.completion.chunk"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == greedy(prompt, 10)
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].choices[0].delta.content is None


def test_chat_drops_the_oldest_turns_past_block_size(client, tok):
    messages = [{"role": "system", "content": "The quick fox"}, {"role": "user", "content": "hello"},
                {"role": "assistant", "content": " world"}, {"role": "user", "content": "ROMEO: what light"}]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=1)
    assert r.usage.prompt_tokens == len(tok.encode("The quick fox\nROMEO: what light\n")) == 32  # the system stays


def test_sampling_is_reproducible_for_a_seed(client):
    def one(seed: int) -> str:
        return client.completions.create(model="tiny", prompt=PROMPT, max_tokens=10, temperature=1.0, seed=seed,
                                         extra_body={"top_k": 5}).choices[0].text

    assert one(7) == one(7)
    assert len({one(s) for s in range(4)}) > 1


def test_a_model_not_served_is_a_404_in_openais_shape(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4", prompt=PROMPT)
    assert e.value.body == {"message": "The model `gpt-4` does not exist: this server serves `tiny`",
                            "type": "invalid_request_error", "param": "model", "code": "model_not_found"}
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hello"}])


@pytest.mark.parametrize(("call", "param", "message"), [
    (dict(route="completions", top_p=0.5), "top_p", "top_p 0.5: only 1 is served"),
    (dict(route="completions", n=2), "n", "n 2: only 1 is served"),
    (dict(route="completions", extra_body={"colour": 1}), "colour", "unknown field(s) colour"),
    (dict(route="completions", max_tokens=21), "max_tokens", "max_tokens 21 is above this server's cap (20)"),
    (dict(route="completions", temperature=-1), "temperature", "'temperature' must be a finite number ≥ 0"),
    (dict(route="completions", seed=2**31), "seed", "'seed' must be in [-2147483648, 2147483647]"),
    (dict(route="completions", logprobs=2), "logprobs", "logprobs 2: is not served"),
    (dict(route="completions", prompt="ROMEO: \u2603"), None, "prompt 0: 1 character(s) not in the char vocabulary"),
    (dict(route="chat", tools=[{"type": "function", "function": {"name": "f"}}]), "tools", "is not served"),
    (dict(route="chat", messages=[{"role": "tool", "content": "x"}]), "messages", "messages[0]: role must be one of"),
    (dict(route="chat", messages=[{"role": "user", "content": "hi \u2603"}]), "messages",
     "messages[0].content: 1 character(s) not in the char vocabulary"),
    (dict(route="chat", messages=[{"role": "user", "content": "hello"}, {"role": "assistant", "content": "x"}]),
     "messages", "the last message must have role 'user'"),
])
def test_bad_fields_are_bad_request_errors_naming_them(client, call, param, message):
    call = dict(call)
    route = call.pop("route")
    with pytest.raises(openai.BadRequestError) as e:
        if route == "completions":
            client.completions.create(**{"model": "tiny", "prompt": PROMPT, **call})
        else:
            client.chat.completions.create(**{"model": "tiny", "messages": [{"role": "user", "content": "hello"}],
                                              **call})
    assert message in str(e.value) and message in e.value.body["message"]
    assert e.value.body["param"] == param and e.value.body["type"] == "invalid_request_error"


def test_errors_keep_tf_servings_shape_on_its_routes(server):
    r = requests.post(f"{server}/v1/models/tiny:predict", json={"instances": [1]}, timeout=60)
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    r = requests.get(f"{server}/v1/chat/completions", timeout=60)
    assert r.status_code == 405 and r.json()["error"]["message"] == "Method Not Allowed"


@pytest.mark.slow  # starts its own server (the export copied, its template record set to alpaca)
def test_an_instruct_export_chats_in_the_alpaca_template(tiny_export, tmp_path_factory):
    """export.json's source.template picks the template: the tiny vocabulary cannot spell the Alpaca
    preamble, so the 400 names its first character, at position 0 of the prompt the server built."""
    import shutil

    from .helpers import start_server
    export = tmp_path_factory.mktemp("alpaca") / "export"
    shutil.copytree(tiny_export, export)
    info = json.loads((export / "export.json").read_text())
    info["source"]["template"] = "alpaca"
    (export / "export.json").write_text(json.dumps(info))
    with start_server(export) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}])
    assert "'B' (U+0042) at position 0" in e.value.body["message"]  # "Below is an instruction ..."
