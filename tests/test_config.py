"""Config dataclasses: presets, strict keys and types, YAML round trip."""

import pytest
import yaml

from tfgpt.config import YAML_HEADER, GPTConfig, from_dict, load_model_config, read_yaml, save_model_config
from tfgpt.errors import ConfigError


def test_presets_have_the_documented_shapes():
    cs = GPTConfig.preset("char-small")
    assert (cs.n_layer, cs.n_head, cs.n_embd, cs.block_size, cs.vocab_size) == (4, 4, 128, 64, 65)
    baby = GPTConfig.preset("baby")
    assert (baby.n_layer, baby.n_head, baby.n_embd, baby.block_size) == (6, 6, 384, 256)
    g = GPTConfig.preset("gpt2")
    assert (g.n_layer, g.n_head, g.n_embd, g.block_size, g.vocab_size) == (12, 12, 768, 1024, 50257)
    assert g.num_params() == 124_439_808
    m = GPTConfig.preset("gpt2-medium")
    assert (m.n_layer, m.n_head, m.n_embd) == (24, 16, 1024)


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        from_dict(GPTConfig, {"n_layers": 4}, where="x.yaml: model")
    msg = str(e.value)
    assert "'n_layers'" in msg and "x.yaml" in msg and "n_layer" in msg and "valid keys" in msg


@pytest.mark.parametrize(
    "key,value",
    [("n_layer", "4"), ("n_layer", 4.0), ("n_layer", True), ("dropout", "0.1"), ("bias", 1), ("norm", "middle")],
)
def test_wrong_types_are_rejected(key, value):
    with pytest.raises(ConfigError, match=key):
        from_dict(GPTConfig, {key: value})


def test_invalid_values():
    with pytest.raises(ConfigError, match="divisible"):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(ConfigError, match="dropout"):
        from_dict(GPTConfig, {"dropout": 1.5})
    with pytest.raises(ConfigError, match="unknown preset"):
        GPTConfig.preset("gpt5")


def test_ints_are_accepted_for_floats():
    assert from_dict(GPTConfig, {"dropout": 0}).dropout == 0.0


BABY_POST = {
    "vocab_size": 65, "block_size": 256, "n_layer": 6, "n_head": 6, "n_embd": 384, "dropout": 0.2,
    "bias": True, "norm": "post", "tie_embeddings": False, "layer_norm_epsilon": 1e-05,
}


def test_to_dict_holds_every_field():
    assert GPTConfig.preset("baby", norm="post", tie_embeddings=False).to_dict() == BABY_POST
    assert from_dict(GPTConfig, BABY_POST).to_dict() == BABY_POST


def test_yaml_round_trip(tmp_path):
    cfg = GPTConfig.preset("baby", norm="post", tie_embeddings=False)
    save_model_config(tmp_path / "config.yaml", cfg, train={"lr": 0.001})
    text = (tmp_path / "config.yaml").read_text()
    assert text.startswith(YAML_HEADER + "model:\n  vocab_size: 65\n  block_size: 256\n")
    assert "  layer_norm_epsilon: 1.0e-05\n" in text and text.endswith("train:\n  lr: 0.001\n# end\n")
    assert read_yaml(tmp_path / "config.yaml")["model"] == BABY_POST
    assert load_model_config(tmp_path / "config.yaml").to_dict() == BABY_POST
    assert read_yaml(tmp_path / "config.yaml")["train"] == {"lr": 0.001}
    assert not list(tmp_path.glob(".*tmp"))


def test_a_yaml_file_tfgpt_wrote_and_that_was_cut_short_is_refused(tmp_path):
    """Half a YAML mapping is still a mapping: the end line is what tells a cut file from a whole one."""
    path = tmp_path / "config.yaml"
    save_model_config(path, GPTConfig.preset("baby"), train={"lr": 0.001, "max_steps": 5})
    whole = path.read_text()
    for cut in (whole.index("train:"), whole.index("  max_steps"), len(whole) - len("# end\n")):
        path.write_text(whole[:cut])
        assert isinstance(yaml.safe_load(path.read_text()), dict)  # YAML alone takes it
        with pytest.raises(ConfigError, match=r"config.yaml: truncated: tfgpt wrote it, but its '# end' line"):
            read_yaml(path)
    path.write_text("\ufeff" + whole[:whole.index("  max_steps")])  # re-saved by an editor with a BOM
    with pytest.raises(ConfigError, match="truncated"):
        read_yaml(path)
    path.write_text(whole[:whole.index("train:") + 4])  # cut inside a key: still "truncated", not a YAML error
    with pytest.raises(ConfigError, match="truncated"):
        read_yaml(path)
    path.write_text(whole.replace("\n", "\r\n") + "seed: 3  # a key a user appended\n")
    assert read_yaml(path)["seed"] == 3
    path.write_text(whole[:len(whole) - len("# end\n")].split("\n", 1)[1])  # no header: a file as a user wrote it
    assert read_yaml(path)["train"] == {"lr": 0.001, "max_steps": 5}


def test_yaml_preset_key_and_bad_files(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  preset: char-small\n  n_layer: 2\n")
    assert load_model_config(p).n_layer == 2
    p.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_model_config(p)
    p.write_text("!!python/object:os.system 'echo hi'\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        read_yaml(p)
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  preset: char-small\n  layer_norm_epsilon: 1e-6\n  dropout: 2E-1\n")
    cfg = load_model_config(p)
    assert (cfg.layer_norm_epsilon, cfg.dropout) == (1e-6, 0.2)
    # read with yaml.safe_load (YAML 1.1): the exponent form is text until a float field reads it
    assert read_yaml(p)["model"]["dropout"] == "2E-1"
    p.write_text("model:\n  dropout: 1e-1\n  n_layer: 1e1\n")  # only float fields take it
    with pytest.raises(ConfigError, match=r"c.yaml: model: key 'n_layer' must be int, got str '1e1'"):
        load_model_config(p)
    p.write_text("model:\n  dropout: e-1\n")
    with pytest.raises(ConfigError, match="'dropout' must be float, got str 'e-1'"):
        load_model_config(p)
