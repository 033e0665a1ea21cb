"""tfgpt.train.config: train/data configs, YAML and --set overrides, validation (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfgpt.errors import ConfigError
from tfgpt.train.config import TrainConfig, resolve_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["char-small", "shakespeare-char", "gpt2-124m", "tiny", "nanogpt-cpu"])
def test_shipped_configs_resolve(name):
    model, train, data = resolve_config(CONFIGS / f"{name}.yaml")
    assert train.max_steps > 0 and data.tokenizer is not None
    if name == "char-small":
        assert (model.n_layer, model.n_head, model.n_embd, model.block_size, model.vocab_size) == (4, 4, 128, 64, 65)
        assert (train.batch_size, train.learning_rate, train.max_steps, model.dropout) == (12, 1e-3, 2000, 0.0)
    if name == "shakespeare-char":
        assert (model.n_layer, model.n_head, model.n_embd, model.block_size, train.batch_size) == (6, 6, 384, 256, 64)
    if name == "gpt2-124m":
        assert train.global_batch * model.block_size == 524288


#: nanoGPT's CPU baby GPT: config/train_shakespeare_char.py, train.py's defaults and the README's command-line
#: overrides, under tfgpt's names.
NANOGPT_CPU = {
    "block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0, "bias": False,
    "max_steps": 2000, "decay_steps": 2000, "batch_size": 12, "grad_accum_steps": 1, "learning_rate": 1e-3,
    "min_lr": 1e-4, "warmup_steps": 100, "lr_schedule": "cosine", "weight_decay": 0.1, "decay_embeddings": True,
    "beta1": 0.9, "beta2": 0.99, "grad_clip": 1.0, "eval_interval": 250, "eval_iters": 20,
}


def test_the_nanogpt_config_holds_nanogpts_settings():
    model, train, data = resolve_config(CONFIGS / "nanogpt-cpu.yaml", vocab_size=65)
    got = {k: getattr(model if hasattr(model, k) else train, k) for k in NANOGPT_CPU}
    assert got == NANOGPT_CPU
    assert (model.vocab_size, model.tie_embeddings, model.norm, data.tokenizer) == (65, True, "pre", "char")


def test_vocab_size_comes_from_the_data_unless_the_config_names_one():
    """tiny.yaml and shakespeare-char.yaml leave it out (a corpus of 80 characters needs no edit);
    ``--set model.vocab_size=null`` drops a config's own number for the data dir's."""
    for name in ("tiny", "shakespeare-char", "char-small"):
        assert resolve_config(CONFIGS / f"{name}.yaml", vocab_size=80)[0].vocab_size == 80
    named = {"model": {"vocab_size": 65, "n_layer": 1, "n_head": 1, "n_embd": 8, "block_size": 8}}
    assert resolve_config(named, vocab_size=80)[0].vocab_size == 65
    assert resolve_config(named, ["model.vocab_size=null"], vocab_size=80)[0].vocab_size == 80


def test_overrides_and_strict_keys():
    m, t, d = resolve_config({"model": {"preset": "char-small"}},
                             ["train.max_steps=7", "learning_rate=1e-2", "model.n_layer=2", "data.dir=x"])
    assert (t.max_steps, t.learning_rate, m.n_layer, d.dir) == (7, 0.01, 2, "x")
    with pytest.raises(ConfigError, match="unknown key 'max_step'.*valid keys"):
        resolve_config({"train": {"max_step": 5}})
    with pytest.raises(ConfigError, match="unknown section 'trian'"):
        resolve_config({"trian": {}})
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        resolve_config({}, ["train.nope=1"])
    with pytest.raises(ConfigError, match="must be int"):
        resolve_config({}, ["train.max_steps=abc"])
    with pytest.raises(ConfigError, match="min_lr"):
        resolve_config({"train": {"min_lr": 1.0, "learning_rate": 0.1}})


def test_file_and_set_read_values_alike(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {preset: char-small}\ntrain:\n  learning_rate: 6e-4\n  min_lr: 6E-5\n"
                   "  epsilon: 1.0e-9\n  sample_prompt: 'x'\n")
    _, t, _ = resolve_config(cfg)
    assert (t.learning_rate, t.min_lr, t.epsilon) == (6e-4, 6e-5, 1e-9)
    _, t2, _ = resolve_config(cfg, ["train.learning_rate=6e-4", "min_lr=6E-5", "train.epsilon=1.0e-9"])
    assert t2 == t
    cfg.write_text("train:\n  learning_rate: fast\n")
    with pytest.raises(ConfigError, match=r"c.yaml: train: key 'learning_rate' must be float, got str 'fast'"):
        resolve_config(cfg)
    # text fields keep the raw text; other fields are YAML scalars
    m, t, d = resolve_config({"data": {"dir": "x"}}, ["train.sample_prompt=ROMEO:", "data.tokenizer=yes",
                                                       "train.memory_check=off", "train.jit_compile=no",
                                                       "data.dir=null", "model.norm=post"])
    assert (t.sample_prompt, d.tokenizer, t.memory_check, t.jit_compile, d.dir, m.norm) == (
        "ROMEO:", "yes", "off", False, None, "post")
    for prompt in ("1.", "Hello: world", "[a, b]", "null", "", " two words "):
        assert resolve_config({}, [f"train.sample_prompt={prompt}"])[1].sample_prompt == prompt
    with pytest.raises(ConfigError, match="learning_rate must be a finite number"):
        resolve_config({}, ["train.learning_rate=.inf"])
    with pytest.raises(ConfigError, match="eval_batch_size must be positive"):
        resolve_config({}, ["train.eval_batch_size=0"])


def test_relative_data_dir_config_dir_first(tmp_path, monkeypatch):
    (tmp_path / "cfg" / "d").mkdir(parents=True)
    (tmp_path / "cwd" / "d").mkdir(parents=True)
    (tmp_path / "cwd" / "only-here").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    for name, expected in (("d", tmp_path / "cfg" / "d"), ("only-here", "only-here")):
        (tmp_path / "cfg" / "c.yaml").write_text(f"data: {{dir: {name}}}\n")
        assert resolve_config(tmp_path / "cfg" / "c.yaml")[2].dir == str(expected)


def test_lr_schedule_fields_are_checked():
    with pytest.raises(ConfigError, match="lr_schedule"):
        resolve_config({"train": {"lr_schedule": "step"}})
    with pytest.raises(ConfigError, match="lr_cooldown"):
        resolve_config({"train": {"lr_cooldown": 0.0}})
    with pytest.raises(ConfigError, match=r"lr_decay_steps \(5\) must exceed train.warmup_steps \(5\)"):
        resolve_config({"train": {"lr_decay_steps": 5, "warmup_steps": 5}})


def test_derived_steps_and_batch():
    t = TrainConfig(max_steps=300, warmup_steps=10, batch_size=6, grad_accum_steps=4)
    assert (t.decay_steps, t.global_batch) == (300, 24)
    assert TrainConfig(max_steps=300, warmup_steps=10, lr_decay_steps=200).decay_steps == 200
    assert TrainConfig(max_steps=5, warmup_steps=10).decay_steps == 11  # always past the warmup
    assert TrainConfig().to_dict()["lr_schedule"] == "cosine"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.max_steps=abc", "--set 'train.max_steps=abc': key 'max_steps' must be int, got str 'abc'"),
        ("train.max_step=10", "unknown key 'max_step' in train (did you mean 'max_steps'?)"),
        ("max_stesp=3", "unknown key 'max_stesp' (did you mean 'max_steps'?)"),
        ("trian.max_steps=3", "(did you mean 'train'?)"),
        ("model.preset=char-smal", "unknown preset 'char-smal' (did you mean 'char-small'?)"),
    ],
)
def test_override_errors_name_the_set_item_and_the_closest_key(override, expected):
    with pytest.raises(ConfigError) as e:
        resolve_config({"model": {"preset": "char-small"}}, overrides=[override])
    assert expected in str(e.value)


def test_a_value_a_set_gave_is_blamed_on_that_set_not_the_file():
    config = {"model": {"preset": "char-small"}, "train": {"learning_rate": 1e-3, "warmup_steps": 0}}
    with pytest.raises(ConfigError) as e:
        resolve_config(config, overrides=["train.max_steps=-5", "model.n_layer=0"])
    assert e.value.problems == ["--set 'model.n_layer=0': model.n_layer must be positive, got 0",
                                "--set 'train.max_steps=-5': train.max_steps must be positive, got -5"]
    with pytest.raises(ConfigError) as e:  # a problem of two keys names each --set that gave one
        resolve_config(config, overrides=["min_lr=0.1"])
    assert e.value.problems == ["--set 'min_lr=0.1': train.min_lr (0.1) exceeds train.learning_rate (0.001)"]
    with pytest.raises(ConfigError) as e:  # the file's own bad value is still the file's
        resolve_config({**config, "train": {"max_steps": -1}}, overrides=["train.seed=3"])
    assert e.value.problems == ["config: train: train.max_steps must be positive, got -1"]


def test_a_config_file_named_like_a_section_is_not_mistaken_for_a_key(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("model:\n  preset: char-small\ntrain:\n  warmup_steps: 10\n")
    with pytest.raises(ConfigError) as e:
        resolve_config(path, overrides=["train.max_steps=-5", "train.lr_decay_steps=5"])
    assert e.value.problems == ["--set 'train.max_steps=-5': train.max_steps must be positive, got -5"]
    with pytest.raises(ConfigError) as e:
        resolve_config(path, overrides=["train.lr_decay_steps=5"])
    assert e.value.problems == ["--set 'train.lr_decay_steps=5': train.lr_decay_steps (5) must exceed "
                                "train.warmup_steps (10)"]


def test_unknown_config_key_suggests_the_closest_one():
    with pytest.raises(ConfigError, match=r"unknown key 'lerning_rate' \(did you mean 'learning_rate'\?\)"):
        resolve_config({"model": {"preset": "char-small"}, "train": {"lerning_rate": 1e-3}})
    with pytest.raises(ConfigError, match=r"unknown section 'modl' \(did you mean 'model'\?\)"):
        resolve_config({"modl": {}})


def test_every_config_problem_is_reported_at_once():
    """Bad overrides, unknown keys and wrong types in every section: one error naming all of them."""
    config = {"model": {"n_layr": 2, "n_embd": "wide", "vocab_size": 65}, "train": {"max_step": 3, "seed": "x"},
              "data": {"tokenzer": "char"}, "logging": {}}
    with pytest.raises(ConfigError) as e:
        resolve_config(config, overrides=["train.batch_size=abc", "lerning_rate=1"])
    assert e.value.problems == [
        "config: unknown section 'logging'; valid sections: model, train, data",
        "--set 'train.batch_size=abc': key 'batch_size' must be int, got str 'abc'",
        "--set 'lerning_rate=1': unknown key 'lerning_rate' (did you mean 'learning_rate'?); "
        "write it as section.key with section in model, train, data",
        "config: model: unknown key 'n_layr' (did you mean 'n_layer'?); valid keys: vocab_size, block_size, "
        "n_layer, n_head, n_embd, dropout, bias, norm, tie_embeddings, layer_norm_epsilon",
        "config: model: key 'n_embd' must be int, got str 'wide'",
        e.value.problems[5],  # train's unknown key lists all of train's keys: checked by its start below
        "config: train: key 'seed' must be int, got str 'x'",
        "config: data: unknown key 'tokenzer' (did you mean 'tokenizer'?); valid keys: dir, tokenizer, "
        "train_split, val_split, shuffle",
    ]
    assert e.value.problems[5].startswith("config: train: unknown key 'max_step' (did you mean 'max_steps'?)")
    assert str(e.value).splitlines()[0] == "8 problems:"
