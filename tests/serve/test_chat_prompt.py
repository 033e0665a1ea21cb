"""tfgpt.serve.chat_prompt: chat messages become the prompt tfgpt chat would send; the export's template."""

from __future__ import annotations

import io
import json

import keras
import pytest
import yaml

from tfgpt.config import GPTConfig
from tfgpt.errors import ConfigError
from tfgpt.generate.chat import ChatSession, instruct_template
from tfgpt.model import GPT
from tfgpt.prompt_templates import TEMPLATE_STOP
from tfgpt.serve.chat_prompt import chat_prompt, export_template
from tfgpt.serve.completions import FieldError
from tfgpt.tokenizers import CharTokenizer


def _session(block_size: int) -> ChatSession:
    tok = CharTokenizer.train(["You: Model: hello there, how are you\n"])
    keras.utils.set_random_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16))
    return ChatSession(model, tok, io.StringIO(), None, 0, max_new_tokens=4, temperature=0, jit_compile=False)


def _history(session: ChatSession, lines: list[str]) -> list[tuple[str, str]]:
    """Say ``lines`` in a real chat session: the conversation as (role, text) messages, replies as chat kept them."""
    messages = []
    for line in lines:
        said = session.prompt(line)[1]
        session.say(line)
        messages += [("user", line), ("assistant", session.turns[-1][len(said):-1])]
    return messages


@pytest.mark.parametrize("block_size", [64, 32])  # 32: the conversation outgrows it and chat drops turns
def test_the_transcript_is_the_prompt_of_tfgpt_chat(block_size):
    session = _session(block_size)
    messages = _history(session, ["hello", "how are you", "hello there"])
    prompt, stops = chat_prompt([*messages, ("user", "how")], None, session.tokenizer, block_size)
    assert prompt == session.prompt("how")[0]
    assert stops == session.sampling["stop"] == ["\nYou:"]
    if block_size == 32:
        assert not prompt.startswith("You: hello\n")  # the first turn was dropped, by both
    system = chat_prompt([("system", "hello there"), *messages, ("user", "how")], None, session.tokenizer, 128)[0]
    assert system.startswith("hello there\nYou: hello\nModel:")


def test_the_alpaca_template_is_chats_for_an_instruct_run(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"instruct": {"template": "alpaca", "mask_prompt": True}}))
    tok = CharTokenizer.train(["abc"])
    messages = [("system", "ignored"), ("user", "a"), ("assistant", "b"), ("user", "  Name a color.\n")]
    prompt, stops = chat_prompt(messages, "alpaca", CharTokenizer.train(["Name a color.\n"]), 8)
    assert prompt == instruct_template(tmp_path)("Name a color.")  # chat strips the line too
    assert stops == [TEMPLATE_STOP]
    with pytest.raises(FieldError, match=r"messages\[0\].content: 1 character\(s\) not in the char vocabulary"):
        chat_prompt([("user", "abd")], "alpaca", tok, 8)  # the preamble's characters are the model's 400


def test_a_message_the_vocabulary_cannot_spell_is_named():
    tok = CharTokenizer.train(["hello\n"])
    with pytest.raises(FieldError) as e:
        chat_prompt([("user", "hello"), ("assistant", "hex"), ("user", "hello")], None, tok, 32)
    assert str(e.value).startswith("messages[1].content: 1 character(s) not in the char vocabulary") and \
        e.value.param == "messages"


def test_the_export_records_its_template(tiny_export, tmp_path):
    info = json.loads((tiny_export / "export.json").read_text())
    assert info["source"]["template"] is None  # written by tfgpt export: a plain LM run
    assert export_template(info, tiny_export) == (None, str(tiny_export / "export.json"))
    assert export_template({"source": {"template": "alpaca"}}, tmp_path)[0] == "alpaca"
    with pytest.raises(ConfigError, match="source.template: instruct.template must be 'alpaca', got 'chatml'"):
        export_template({"source": {"template": "chatml"}}, tmp_path)


def test_an_older_export_reads_its_run_if_still_there(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"instruct": {"template": "alpaca"}}))
    assert export_template({"source": {"run": str(run)}}, tmp_path) == ("alpaca", str(run / "config.yaml"))
    template, where = export_template({"source": {"run": str(tmp_path / "gone")}}, tmp_path / "export")
    assert template is None and where.endswith("and no run at " + str(tmp_path / "gone") + ": the plain transcript")
