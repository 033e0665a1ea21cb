"""tfgpt chat: a line the vocabulary cannot spell is dropped with a message; the chat goes on."""

import io

import keras

from tfgpt.config import GPTConfig
from tfgpt.generate.chat import chat
from tfgpt.model import GPT
from tfgpt.runs import save_run
from tfgpt.tokenizers import CharTokenizer


def test_unknown_character_skips_the_line_and_keeps_the_conversation(tmp_path):
    tok = CharTokenizer.train(["hello there, how are you\n"])
    keras.utils.set_random_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    run = save_run(tmp_path / "run", model, tok)
    out = io.StringIO()
    lines = io.StringIO("zebra \u00e9\nhello\n/quit\n")
    code = chat(str(run), max_new_tokens=4, temperature=0, stdin=lines, stdout=out)
    text = out.getvalue()
    assert code == 0
    assert "[not sent:" in text and "'z'" in text
    # the second line was answered: a reply follows it and the prompt comes back twice more
    assert text.count("You: ") == 3
    after = text.split("[not sent:", 1)[1]
    assert "\n" in after and len(after.split("You: ")[1].strip()) > 0


def test_each_reply_continues_the_whole_conversation(tmp_path):
    """Turn n's prompt is every earlier turn with its reply plus the new line; turn n samples with seed + n."""
    import tfgpt

    tok = CharTokenizer.train(["You: Model: hello there, how are you\n"])
    keras.utils.set_random_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16))
    run = save_run(tmp_path / "run", model, tok)
    out = io.StringIO()
    code = chat(str(run), max_new_tokens=5, temperature=1.0, seed=3, stdin=io.StringIO("hello\nhow\n"), stdout=out)
    assert code == 0
    model, tok = tfgpt.load(run)
    kwargs = dict(max_new_tokens=5, temperature=1.0, stop=["\nYou:"])
    first = tfgpt.generate(model, tok, "You: hello\nModel:", seed=3, **kwargs)
    second = tfgpt.generate(model, tok, f"You: hello\nModel:{first}\nYou: how\nModel:", seed=4, **kwargs)
    assert out.getvalue().splitlines()[1:] == ["You: Model:" + first, "You: Model:" + second, "You: "]


def _instruct_run(tmp_path, template="alpaca"):
    from tfgpt.finetune.instruct import format_prompt

    tok = CharTokenizer.train([format_prompt({"instruction": "Name a color. Say hi.", "input": ""})],
                              special_tokens=["<|endoftext|>"])
    keras.utils.set_random_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=1, n_head=2, n_embd=16))
    return save_run(tmp_path / "run", model, tok, sections={"instruct": {"template": template, "mask_prompt": True}})


def test_an_instruct_run_answers_each_line_in_its_template(tmp_path):
    """Each line is the instruction of its own Alpaca prompt (no history); the reply is what greedy
    generation gives for that prompt, ending at end-of-text or a new "### " header."""
    import tfgpt
    from tfgpt.finetune.instruct import format_prompt

    run = _instruct_run(tmp_path)
    out = io.StringIO()
    code = chat(str(run), max_new_tokens=6, temperature=0, stdin=io.StringIO("Name a color.\n\nSay hi.\n"), stdout=out)
    assert code == 0
    model, tok = tfgpt.load(run)
    replies = [tfgpt.generate(model, tok, format_prompt({"instruction": line, "input": ""}), max_new_tokens=6,
                              temperature=0, stop=["\n\n### "]) for line in ("Name a color.", "Say hi.")]
    lines = out.getvalue().splitlines()
    assert "instruction template" in lines[0]
    # the empty line is skipped: the prompt comes back without a reply
    assert lines[1:] == ["You: Model: " + replies[0], "You: You: Model: " + replies[1], "You: "]


def test_an_unknown_instruct_template_is_refused(tmp_path):
    import pytest

    from tfgpt.errors import ConfigError

    run = _instruct_run(tmp_path, template="chatml")
    with pytest.raises(ConfigError, match="instruct.template must be 'alpaca', got 'chatml'"):
        chat(str(run), stdin=io.StringIO("hi\n"), stdout=io.StringIO())


def test_commands_never_reach_the_model_and_the_context_crops_with_one_notice(tmp_path):
    """/help, /temperature, /reset and an unknown command are handled by chat itself; once the
    conversation outgrows block_size the oldest turns are dropped with one notice, and no Python
    warning is printed into the replies."""
    import warnings

    import tfgpt

    tok = CharTokenizer.train(["You: Model: hello there, how are you /\n"])
    keras.utils.set_random_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    run = save_run(tmp_path / "run", model, tok)
    lines = "/help\n/temperature abc\n/temperature 0\n/nope\nhello\nhow are you there\nhello\n/reset\nhow\n/quit\n"
    out = io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert chat(str(run), max_new_tokens=4, temperature=1.0, stdin=io.StringIO(lines), stdout=out) == 0
    text = out.getvalue()
    assert "/reset  forget the conversation so far" in text
    assert "[/temperature takes a number >= 0, got 'abc']" in text and "[temperature 0]" in text
    assert "[unknown command /nope; /help lists the commands]" in text
    assert text.count("outgrew the model's 32-token context") == 1 and "[conversation cleared]" in text
    assert not [w for w in caught if "block_size" in str(w.message)]
    model, tok = tfgpt.load(run)
    greedy = dict(max_new_tokens=4, temperature=0, stop=["\nYou:"])
    first = tfgpt.generate(model, tok, "You: hello\nModel:", seed=0, **greedy)
    assert "You: Model:" + first + "\n" in text  # /temperature 0 took effect: the first reply is greedy
    after_reset = tfgpt.generate(model, tok, "You: how\nModel:", seed=3, **greedy)
    assert text.endswith("You: Model:" + after_reset + "\nYou: \n")
