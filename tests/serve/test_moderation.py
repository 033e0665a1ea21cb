"""tfgpt serve --moderation: a classifier screens prompts and completions over real HTTP, labelling or blocking.

The classifier is built, not trained, so that what it flags is known exactly: its Transformer block
adds nothing (output projections zeroed) and so do token embeddings, so the pooled state is the final
LayerNorm of the last position's embedding, and the head flags ``spam`` exactly when a text is
``FLAG_LEN`` characters long (char tokenizer: one token each). A completion of ``max_tokens=FLAG_LEN``
is thus flagged, one of ``OK_LEN`` is not, whatever the tiny LM writes.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import requests

import tfgpt
from tfgpt.config import save_model_config
from tfgpt.export import export_run
from tfgpt.export.classifier import keras_probabilities
from tfgpt.finetune.classifier import GPTClassifier
from tfgpt.model.gpt import GPT

from .helpers import start_server

LABELS = ["ham", "spam"]
FLAG_LEN, OK_LEN = 12, 10
PROMPT = "ROMEO:"
FLAGGED_PROMPT = "hello world!"  # FLAG_LEN characters


def flag_length(vocab_size: int, length: int) -> GPTClassifier:
    """A classifier whose ``spam`` logit wins exactly when a text's last token is at position ``length - 1``."""
    keras.utils.set_random_seed(3)
    model = GPTClassifier(GPT(vocab_size=vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32), 2)
    model.build((None, None))
    for v in model.variables:
        if "c_proj" in v.path or "wte" in v.path:
            v.assign(np.zeros(v.shape, "float32"))
    rows = np.zeros((32, 32), "int32") + np.tril(np.ones((32, 32), "int32"))  # row i: i + 1 tokens of id 1
    hidden = np.asarray(model.backbone.hidden_states(rows)[0])[np.arange(32), np.arange(32)]  # [position, n_embd]
    target = hidden[length - 1]
    score = hidden @ target  # [position]
    threshold = (score[length - 1] + np.delete(score, length - 1).max()) / 2
    scale = 8.0 / (score[length - 1] - threshold)
    model.head.kernel.assign(np.stack([np.zeros_like(target), scale * target], axis=1))
    model.head.bias.assign(np.array([0.0, -scale * threshold], "float32"))
    return model


def write_run(path: Path, model: GPTClassifier, tok) -> Path:
    path.mkdir(parents=True)
    section = {"labels": LABELS, "pad_id": model.pad_id, "trainable": "all", "quantize": None, "lora_rank": None,
               "metrics": {}}
    save_model_config(path / "config.yaml", model.backbone.config, classifier=section)
    tok.save(path / "tokenizer")
    model.save(path / "model.keras")
    return path


@pytest.fixture(scope="module")
def case(tiny_export: Path, keras_model, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The classifier (run + export) and the LM's greedy completions of ``PROMPT`` that it flags or passes."""
    lm, tok = keras_model
    root = tmp_path_factory.mktemp("moderation")
    model = flag_length(tok.vocab_size, FLAG_LEN)
    run = write_run(root / "clf", model, tok)
    export_run(run, root / "clf_export", name="clf")
    flagged = tfgpt.generate(lm, tok, PROMPT, max_new_tokens=FLAG_LEN, temperature=0)
    texts = [flagged, flagged[:OK_LEN], flagged[:8], PROMPT, FLAGGED_PROMPT]
    probs = keras_probabilities(model, tok, texts)
    assert probs.argmax(axis=1).tolist() == [1, 0, 0, 0, 1]  # the construction flags exactly what it should
    assert probs.max(axis=1).min() > 0.99
    return SimpleNamespace(run=run, export=root / "clf_export", flagged=flagged, ok=flagged[:OK_LEN],
                           model=model, tok=tok)


@pytest.fixture(scope="module")
def servers(tiny_export: Path, case: SimpleNamespace):
    """``tfgpt serve`` twice, started side by side: blocking with the classifier's export, labelling with its run."""
    managers = [start_server(tiny_export, "--moderation", str(case.export), "--moderation-action", "block"),
                start_server(tiny_export, "--moderation", str(case.run))]
    with ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(m.__enter__) for m in managers]
        for m, f in zip(managers, futures, strict=True):
            if f.exception() is None:
                stack.push(m.__exit__)
        yield SimpleNamespace(block=futures[0].result(), label=futures[1].result())


def sse(base: str, body: dict) -> tuple[int, list]:
    with requests.post(f"{base}/v1/completions", json={**body, "stream": True}, stream=True, timeout=60) as r:
        if r.status_code != 200:
            return r.status_code, [r.json()]
        lines = [line.decode() for line in r.iter_lines() if line]
    return 200, [line.removeprefix("data: ") if line.endswith("[DONE]") else json.loads(line[6:]) for line in lines]


def choices(events: list) -> list[dict]:
    """The choice of each stream chunk before ``[DONE]``."""
    return [e["choices"][0] for e in events[:-1]]


@pytest.mark.slow  # carries the setup: the classifier export and two servers started side by side
def test_label_mode_adds_results_and_withholds_nothing(servers, case):
    body = {"prompt": [PROMPT, FLAGGED_PROMPT], "max_tokens": FLAG_LEN}
    r = requests.post(f"{servers.label}/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    c0, c1 = r.json()["choices"]
    assert c0["text"] == case.flagged and c0["finish_reason"] == "length"
    assert c0["moderation"]["completion"]["label"] == "spam" and c0["moderation"]["completion"]["flagged"] is True
    assert c0["moderation"]["prompt"]["flagged"] is False and c0["moderation"]["prompt"]["label"] == "ham"
    assert c1["moderation"]["prompt"]["flagged"] is True and c1["text"]  # labelled, still answered
    want = keras_probabilities(case.model, case.tok, [case.flagged])[0]
    got = c0["moderation"]["completion"]
    assert abs(got["probability"] - want.max()) < 1e-5
    assert abs(got["probabilities"]["spam"] - want[1]) < 1e-5 and set(got["probabilities"]) == set(LABELS)
    ok = requests.post(f"{servers.label}/v1/completions", json={"prompt": PROMPT, "max_tokens": OK_LEN}, timeout=60)
    assert ok.json()["choices"][0]["text"] == case.ok
    assert ok.json()["choices"][0]["moderation"]["completion"]["flagged"] is False


def test_label_mode_predict_and_stream(servers, case):
    rows = requests.post(f"{servers.label}/v1/models/tiny:predict", timeout=60,
                         json={"instances": [{"prompts": PROMPT, "max_new_tokens": FLAG_LEN}]}).json()["predictions"]
    assert rows[0]["completions"] == case.flagged and rows[0]["moderation"]["completion"]["flagged"] is True
    cols = requests.post(f"{servers.label}/v1/models/tiny:predict", timeout=60,
                         json={"inputs": {"prompts": [PROMPT], "max_new_tokens": OK_LEN}}).json()["outputs"]
    assert cols["completions"] == [case.ok] and cols["moderation"][0]["completion"]["flagged"] is False
    status, events = sse(servers.label, {"prompt": PROMPT, "max_tokens": FLAG_LEN})
    assert status == 200 and events[-1] == "[DONE]"
    assert "".join(c["text"] for c in choices(events)) == case.flagged
    last = choices(events)[-1]  # the finish chunk carries the results for the whole text
    assert last["finish_reason"] == "length" and last["moderation"]["completion"]["flagged"] is True
    assert last["moderation"]["prompt"]["flagged"] is False
    assert all("moderation" not in c for c in choices(events)[:-1])


def test_block_mode_refuses_a_flagged_prompt_with_a_400(servers):
    body = {"prompt": [PROMPT, FLAGGED_PROMPT], "max_tokens": 4}
    r = requests.post(f"{servers.block}/v1/completions", json=body, timeout=60)
    assert r.status_code == 400
    error = r.json()["error"]  # OpenAI's error shape, the results inside it
    assert error["message"].startswith("prompt 1 flagged by moderation: label 'spam' (probability ")
    assert (error["code"], error["param"], error["type"]) == ("content_filter", "prompt", "invalid_request_error")
    assert [m["flagged"] for m in error["moderation"]] == [False, True]
    p = requests.post(f"{servers.block}/v1/models/tiny:predict", json={"instances": [FLAGGED_PROMPT]}, timeout=60)
    assert p.status_code == 400 and p.json()["code"] == "content_filter"
    status, events = sse(servers.block, {"prompt": FLAGGED_PROMPT, "max_tokens": 4})
    assert status == 400 and "prompt 0 flagged by moderation: label 'spam'" in events[0]["error"]["message"]


def test_block_mode_withholds_a_flagged_completion(servers, case):
    r = requests.post(f"{servers.block}/v1/completions", json={"prompt": PROMPT, "max_tokens": FLAG_LEN}, timeout=60)
    assert r.status_code == 200, r.text
    (c0,) = r.json()["choices"]
    assert c0["text"] == "" and c0["finish_reason"] == "content_filter"
    assert c0["moderation"]["completion"]["label"] == "spam"
    ok = requests.post(f"{servers.block}/v1/completions", json={"prompt": PROMPT, "max_tokens": OK_LEN}, timeout=60)
    assert ok.json()["choices"][0]["text"] == case.ok and ok.json()["choices"][0]["finish_reason"] == "length"
    rows = requests.post(f"{servers.block}/v1/models/tiny:predict", timeout=60,
                         json={"instances": [{"prompts": p, "max_new_tokens": FLAG_LEN} for p in (PROMPT, "The")]})
    first, second = rows.json()["predictions"]
    assert first["completions"] == "" and first["ids"] == [-1] * FLAG_LEN and first["num_tokens"] == 0
    assert first["moderation"]["completion"]["flagged"] is True and second["completions"] == ""


def test_block_mode_stream_stops_before_the_flagged_text(servers, case):
    status, events = sse(servers.block, {"prompt": PROMPT, "max_tokens": FLAG_LEN})
    assert status == 200 and events[-1] == "[DONE]"
    *sent, last = choices(events)
    assert [c["text"] for c in sent] == [case.flagged[:8]]  # the first chunk passes, the second is withheld
    assert last["finish_reason"] == "content_filter" and last["text"] == ""
    assert last["moderation"]["completion"]["flagged"] is True
    status, events = sse(servers.block, {"prompt": PROMPT, "max_tokens": OK_LEN})
    assert "".join(c["text"] for c in choices(events)) == case.ok
    last = choices(events)[-1]
    assert last["finish_reason"] == "length" and not last["moderation"]["completion"]["flagged"]


def test_chat_is_moderated_through_the_openai_client(servers, case):
    """The chat route screens the last user message and the reply: labelled, blocked, withheld mid-stream."""
    import openai

    label, block = (openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
                    for base in (servers.label, servers.block))
    ask = [{"role": "user", "content": PROMPT}]
    r = label.chat.completions.create(model="tiny", messages=ask, max_tokens=FLAG_LEN)
    assert r.choices[0].model_extra["moderation"]["completion"]["flagged"] is True and r.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as e:
        block.chat.completions.create(model="tiny", messages=[{"role": "system", "content": PROMPT},
                                                              {"role": "user", "content": FLAGGED_PROMPT}])
    assert e.value.body["message"].startswith("messages[1] flagged by moderation: label 'spam'")
    assert (e.value.body["code"], e.value.body["param"]) == ("content_filter", "messages")
    r = block.chat.completions.create(model="tiny", messages=ask, max_tokens=FLAG_LEN)
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == ("", "content_filter")
    chunks = list(block.chat.completions.create(model="tiny", messages=ask, max_tokens=FLAG_LEN, stream=True))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert len("".join(c.choices[0].delta.content or "" for c in chunks)) == 8  # the first 8-token chunk passed


def test_ids_out_is_refused_and_logits_served(servers):
    g = requests.post(f"{servers.block}/v1/models/tiny:predict", timeout=60,
                      json={"signature_name": "generate_ids", "inputs": {"ids": [[1, 2]], "max_new_tokens": 2}})
    assert g.status_code == 403 and "generate_ids" in g.json()["error"]
    lg = requests.post(f"{servers.block}/v1/models/tiny:predict", timeout=60,
                       json={"signature_name": "logits", "instances": [[1, 2, 3]]})
    assert lg.status_code == 200 and len(lg.json()["predictions"][0]["logits"]) == 3


@pytest.mark.parametrize(("args", "message"), [
    (["--moderation", "{lm_run}"], r"config.yaml: no 'classifier:' section .*not a classifier run"),
    (["--moderation", "{clf}", "--moderation-flag", "eggs"], "--moderation-flag eggs: not a label of .* ham, spam"),
    (["--moderation-action", "block"], "need --moderation RUN2"),
    (["--moderation", "{missing}"], "no such directory"),
])
def test_bad_moderation_input_is_one_line_at_startup(tiny_export, case, tmp_path, capsys, args, message):
    from tfgpt.cli import main

    paths = {"lm_run": tiny_export.parent / "run", "clf": case.run, "missing": tmp_path / "nope"}
    argv = ["serve", "--export", str(tiny_export), *(a.format(**paths) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfgpt serve: error:") and "\n" not in err
    assert re.search(message, err), err
