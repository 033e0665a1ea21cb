"""The tfgpt command line, run as a user runs it (a subprocess)."""

import argparse
import subprocess
import sys

import keras
import pytest

from tfgpt.config import GPTConfig
from tfgpt.model import GPT
from tfgpt.runs import save_run
from tfgpt.tokenizers import CharTokenizer

#: Lines a user cannot act on: TensorFlow/absl start-up logs, CUDA probing, Python warnings.
NOISE = ("absl::InitializeLog", "cuda", "cuInit", "oneDNN", "cpu_feature_guard", "XNNPACK", "Warning:",
         "WARNING:", "I0000", "W0000", "E0000")


def noise_lines(text):
    return [line for line in text.splitlines() if any(n in line for n in NOISE)]  # "tfgpt: warning:" is kept


def tfgpt_cli(*args, timeout=300):
    """Run ``python -m tfgpt ARGS``; every command must be quiet (issue 15) unless ``--verbose``."""
    out = subprocess.run([sys.executable, "-m", "tfgpt", *args], capture_output=True, text=True, timeout=timeout)
    if "--verbose" not in args:
        assert noise_lines(out.stderr + out.stdout) == [], out.stderr[-3000:]
    return out


def test_verbose_shows_tensorflow_start_up_logs(tmp_path):
    out = tfgpt_cli("--verbose", "eval", "--run", str(tmp_path / "none"))
    assert out.returncode == 2 and noise_lines(out.stderr)  # the chatter exists, and --verbose keeps it
    assert tfgpt_cli("eval", "--run", str(tmp_path / "none")).stderr.strip().splitlines() == [
        f"tfgpt eval: error: {tmp_path / 'none'} is not a run dir (no config.yaml)"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tok = CharTokenizer.train(["To be, or not to be: that is the question.\n"])
    keras.utils.set_random_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16))
    return save_run(tmp_path_factory.mktemp("cli") / "run", model, tok)


def test_parser_commands_and_defaults():
    """In process: each sub-command's helper adds its arguments and binds its cmd_* function."""
    from tfgpt.cli import build_parser, cmd_eval, cmd_generate, cmd_prepare, cmd_train

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == ["prepare", "train", "eval", "export", "serve", "demo", "generate", "chat",
                                 "import-gpt2", "finetune", "classify"]
    t = parser.parse_args(["train", "--config", "c.yaml", "--set", "train.max_steps=5", "--set", "lr=1", "--resume"])
    assert (t.func, t.config, t.set, t.resume, t.strategy, t.quiet, t.data) == (
        cmd_train, "c.yaml", ["train.max_steps=5", "lr=1"], True, "default", False, None)
    e = parser.parse_args(["eval", "--run", "r"])
    assert (e.func, e.split, e.checkpoint, e.eval_iters) == (cmd_eval, "val", "final", None)
    g = parser.parse_args(["generate", "--run", "r", "--prompt", "x", "--stop", "a", "--stop", "b"])
    assert (g.func, g.max_new_tokens, g.temperature, g.top_k, g.seed, g.stop) == (cmd_generate, 200, 0.8, None, 0,
                                                                                   ["a", "b"])
    pr = parser.parse_args(["prepare", "--input", "a.txt", "b/", "--out", "d", "--tokenizer", "bpe"])
    assert (pr.func, pr.input, pr.shard_tokens, pr.val_fraction, pr.seed) == (cmd_prepare, ["a.txt", "b/"], 1 << 25,
                                                                              0.0005, 1337)
    for bad in (["eval"], ["train", "--strategy", "tpu"], ["prepare", "--out", "d", "--tokenizer", "x"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_prepare_unk_token_reaches_the_tokenizer(tmp_path, capsys):
    """In process: ``prepare --unk-token`` gives the data dir's char tokenizer an id for unknown characters."""
    from tfgpt.cli import build_parser
    from tfgpt.data.pipeline import load_data_tokenizer

    (tmp_path / "a.txt").write_text("abc\n")
    args = build_parser().parse_args(["prepare", "--input", str(tmp_path / "a.txt"), "--out", str(tmp_path / "d"),
                                      "--tokenizer", "char", "--unk-token", "<unk>", "--workers", "0", "--quiet"])
    assert args.func(args) == 0 and '"out"' in capsys.readouterr().out
    assert load_data_tokenizer(tmp_path / "d").encode("abz") == [1, 2, 4]  # '\n' a b c, then <unk> = 4


def test_help_shows_defaults_and_a_stray_flag_gets_its_commands_usage(capsys):
    from tfgpt.cli import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    assert "default: 200" in out and "(default: 0.8)" in out and "default: None" not in out
    with pytest.raises(SystemExit) as e:
        main(["generate", "--run", "r", "--promt", "A"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("usage: tfgpt generate ") and err.rstrip().endswith(
        "tfgpt generate: error: unrecognized arguments: --promt A")


def test_help_lists_commands():
    out = tfgpt_cli("--help")
    assert out.returncode == 0 and "generate" in out.stdout


def test_generate_and_stream_agree(run, capsys):
    from tfgpt.cli import main

    args = ["generate", "--run", str(run), "--prompt", "To be", "--max-new-tokens", "12", "--temperature", "0"]
    plain = tfgpt_cli(*args)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert plain.stdout.startswith("To be") and len(plain.stdout.rstrip("\n")) == len("To be") + 12
    # in process from here (no second TensorFlow start-up): the streamed and completion-only variants
    assert main([*args, "--stream"]) == 0 and capsys.readouterr().out == plain.stdout
    assert main([*args, "--completion-only"]) == 0 and "To be" + capsys.readouterr().out == plain.stdout


def test_generate_quantized_and_past_the_block(run, capsys):
    """--quantize int8 generates from int8 weights; --context slide runs past the block as the Python API does."""
    import tfgpt
    from tfgpt.cli import main
    from tfgpt.model.quantize import quantize_dense

    model, tok = tfgpt.load(run)
    n = model.config.block_size + 4  # past the block: the slide loop (shift is the default the others run)
    args = ["generate", "--run", str(run), "--prompt", "To be", "--temperature", "0", "--completion-only"]
    assert main([*args, "--max-new-tokens", str(n), "--context", "slide"]) == 0
    assert capsys.readouterr().out == tfgpt.generate(model, tok, "To be", n, temperature=0, context="slide") + "\n"
    quantize_dense(model)
    assert main([*args, "--max-new-tokens", "12", "--quantize", "int8"]) == 0
    assert capsys.readouterr().out == tfgpt.generate(model, tok, "To be", 12, temperature=0) + "\n"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--prompt", ""], "empty"),
        (["--prompt", "To be", "--top-k", "1000"], "top_k"),
        (["--prompt", "Zebra"], "Z"),
        (["--prompt", "To be", "--tflite", "m.tflite"], "not both"),
        (["--prompt", "To be", "--tokenizer", "tok"], "--tokenizer goes with --tflite"),
        (["--prompt", "To be", "--tflite", "m.tflite", "--quantize", "int8"], "not both"),
    ],
)
def test_bad_input_is_one_clear_line(run, args, message, capsys):
    """In process (an exception escaping main() fails the test): exit 2 and one ``tfgpt generate: error:`` line."""
    from tfgpt.cli import main

    assert main(["generate", "--run", str(run), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfgpt generate: error: ") and message in err[0], err


def test_missing_run_dir(tmp_path):
    out = tfgpt_cli("generate", "--run", str(tmp_path / "none"), "--prompt", "x")
    assert out.returncode == 2 and "not found" in out.stderr and "Traceback" not in out.stderr


def test_chat_reads_lines_and_streams_replies(run):
    out = subprocess.run(
        [sys.executable, "-m", "tfgpt", "chat", "--run", str(run), "--max-new-tokens", "8", "--temperature", "0"],
        input="to be\n/quit\n", capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("You: ") >= 2


def test_chat_with_role_markers(tmp_path):
    tok = CharTokenizer.train(["You: hi\nModel: hello\n"])
    keras.utils.set_random_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    run = save_run(tmp_path / "run", model, tok)
    out = subprocess.run(
        [sys.executable, "-m", "tfgpt", "chat", "--run", str(run), "--max-new-tokens", "5", "--temperature", "0"],
        input="hi\n", capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Model:" in out.stdout


def test_export_command_and_its_errors(run, tmp_path, capsys):
    import json

    from tfgpt.cli import main

    out = tfgpt_cli("export", "--run", str(run), "--out", str(tmp_path / "exp"), "--format", "savedmodel")
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert list((tmp_path / "exp" / "savedmodel").glob("*/1/saved_model.pb"))
    lines = out.stdout.splitlines()  # a short summary; the record is export.json
    assert lines[0] == f"exported {info['source']['run']} ({info['source']['checkpoint']}) to {tmp_path / 'exp'}"
    assert lines[-1] == f"  details: {tmp_path / 'exp' / 'export.json'}" and len(lines) <= 8
    assert lines[1].startswith(f"  savedmodel: {tmp_path / 'exp' / 'savedmodel'}") and "serving_default" in lines[1]
    # in process from here (no second TensorFlow start-up): --json prints the record, bad input one line
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "exp"), "--format", "savedmodel", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["formats"] == ["savedmodel"]
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "exp2"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "onnx" in err and "Traceback" not in err


def test_import_gpt2_command_and_its_errors(tmp_path, capsys):
    import json

    from tests.convert.gpt2_files import hf_config, random_tensors, tiny_tokenizer, write_hf
    from tfgpt.cli import main

    tok = tiny_tokenizer()
    tensors = random_tensors(tok.vocab_size)
    src = write_hf(tmp_path / "src", tensors, hf_config(tok.vocab_size), prefix="transformer.", tok=tok)
    out = tfgpt_cli("import-gpt2", "--from", str(src), "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert (report["layout"], report["tokenizer"], report["model"]["n_layer"]) == ("hf-safetensors",
                                                                                  "beside the weights", 2)
    assert (tmp_path / "run" / "source.json").is_file() and (tmp_path / "run" / "model.keras").is_file()
    # in process from here (no more TensorFlow start-ups; an exception escaping main() fails the test)
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "exp"), "--format", "hf"]) == 0
    assert (tmp_path / "exp" / "hf" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["import-gpt2", "--from", str(src), "--out", str(tmp_path / "run")]) == 2
    assert "an existing run" in capsys.readouterr().err
    write_hf(tmp_path / "bad", {k: v for k, v in tensors.items() if k != "ln_f.bias"}, hf_config(tok.vocab_size))
    assert main(["import-gpt2", "--from", str(tmp_path / "bad"), "--out", str(tmp_path / "run2"), "--tokenizer",
                 str(src)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("tfgpt import-gpt2: error: ")
    assert "bad/model.safetensors: tensor ln_f.bias is missing" in lines[0]
    assert not (tmp_path / "run2").exists()


def test_finetune_classify_and_classify_commands(tmp_path, fixtures_dir):
    import json

    from tfgpt.finetune.labelled import read_labelled

    data = fixtures_dir / "finetune" / "SMSSpamCollection-200.tsv"
    tok = CharTokenizer.train([r.text for r in read_labelled(data)], special_tokens=["<|endoftext|>"])
    keras.utils.set_random_seed(0)
    base = save_run(tmp_path / "base", GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2,
                                                       n_embd=16)), tok)
    out = tfgpt_cli("finetune", "classify", "--run", str(base), "--data", str(data), "--out", str(tmp_path / "spam"),
                    "--balance", "--epochs", "1")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "trainable parameters: 34 of " in out.stderr and "epoch 1/1 - " in out.stderr
    report = json.loads(out.stdout)  # stdout holds only the JSON result, as tfgpt train's does
    assert report["run"] == str(tmp_path / "spam") and 0 <= report["test_accuracy"] <= 1
    labelled = tfgpt_cli("classify", "--run", str(tmp_path / "spam"), "--text", "hi", "--text", "WIN now")
    assert labelled.returncode == 0, labelled.stderr[-2000:]
    rows = [line.split("\t") for line in labelled.stdout.splitlines()]
    assert len(rows) == 2 and all(r[0] in ("ham", "spam") and 0.5 <= float(r[1]) <= 1 for r in rows)
    same = tfgpt_cli("finetune", "classify", "--run", str(base), "--data", str(data), "--out", str(base))
    lines = [line for line in same.stderr.splitlines() if line.startswith("tfgpt")]
    assert same.returncode == 2 and lines == [f"tfgpt finetune: error: --out {base} is the input run: choose a new "
                                              "directory"]
