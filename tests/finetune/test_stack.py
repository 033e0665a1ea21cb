"""tfgpt.finetune.stack: the clipping, accumulation and precision every finetune command passes to its optimizer."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfgpt.cli import build_parser, main
from tfgpt.errors import ConfigError
from tfgpt.finetune.stack import DEFAULT_CLIP, PRECISIONS, check_stack, make_finetune_optimizer, with_precision
from tfgpt.model.gpt import GPT
from tfgpt.train.config import TrainConfig


@pytest.fixture(scope="module")
def gpt():
    keras.utils.set_random_seed(0)
    model = GPT(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)
    model.build((None, None))
    return model


def test_clip_and_accumulate_reach_the_optimizer(gpt):
    opt = make_finetune_optimizer(gpt, lr=1e-3, steps=10, clip=0.5, accumulate=3)
    assert isinstance(opt, keras.optimizers.AdamW)
    assert (opt.global_clipnorm, opt.gradient_accumulation_steps) == (0.5, 3)
    off = make_finetune_optimizer(gpt, lr=1e-3, steps=10, clip=0, accumulate=1)
    assert (off.global_clipnorm, off.gradient_accumulation_steps) == (None, None)
    default = make_finetune_optimizer(gpt, lr=1e-3, steps=10)
    assert default.global_clipnorm == DEFAULT_CLIP == TrainConfig().grad_clip == 1.0
    # the schedule is the training stack's: cosine from lr to lr/10 over the steps, no warmup
    assert (default._learning_rate.value(0), default._learning_rate.value(10)) == pytest.approx(
        (1e-3, 1e-4))


def test_mixed_float16_wraps_a_loss_scaler_that_clips_and_accumulates(gpt):
    opt = make_finetune_optimizer(gpt, lr=1e-3, steps=10, clip=2.0, accumulate=2, precision="mixed_float16")
    assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
    assert (opt.inner_optimizer.global_clipnorm, opt.inner_optimizer.gradient_accumulation_steps) == (2.0, 2)


def test_with_precision_casts_the_compute_not_the_weights(gpt):
    assert with_precision(gpt, "float32") is gpt
    mixed = with_precision(gpt, "mixed_bfloat16")
    assert mixed.dtype_policy.name == "mixed_bfloat16" and mixed.blocks[0].attn.c_attn.dtype_policy.name == (
        "mixed_bfloat16")
    assert all(str(w.dtype) == "float32" for w in mixed.weights)
    for a, b in zip(gpt.weights, mixed.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
    ids = np.array([[1, 2, 3, 4]], "int32")
    np.testing.assert_allclose(np.asarray(mixed(ids), "float32"), np.asarray(gpt(ids)), atol=0.05)


def test_a_mixed_float16_model_trains_through_the_loss_scaler(gpt):
    mixed = with_precision(gpt, "mixed_float16")
    opt = make_finetune_optimizer(mixed, lr=1e-2, steps=8, clip=1.0, accumulate=2, precision="mixed_float16")
    mixed.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    ids = np.random.default_rng(0).integers(0, 11, size=(4, 9)).astype("int32")
    losses = [float(mixed.train_on_batch(ids[:, :-1], ids[:, 1:])) for _ in range(8)]
    assert losses[-1] < losses[0] - 0.05, losses
    assert int(opt.inner_optimizer.iterations) == 4  # 8 micro-batches, 2 per update
    assert mixed.compute_dtype == "float16" and all(str(w.dtype) == "float32" for w in mixed.weights)


@pytest.mark.parametrize(("args", "message"), [
    ((-1.0, 1, "float32"), "--clip must be a number >= 0 (0: no clipping), got -1.0"),
    ((1.0, 0, "float32"), "--accumulate must be a positive integer, got 0"),
    ((1.0, 2.5, "float32"), "--accumulate must be a positive integer, got 2.5"),
    ((1.0, 1, "float16"), "--precision must be one of auto, float32, mixed_bfloat16, mixed_float16; got 'float16'"),
])
def test_bad_stack_options_are_refused(args, message):
    with pytest.raises(ConfigError) as caught:
        check_stack(*args)
    assert str(caught.value) == message


@pytest.mark.parametrize("task", ["classify", "instruct", "prefer"])
def test_every_finetune_task_takes_the_stack_flags(task):
    base = ["finetune", task, "--run", "r", "--data", "d", "--out", "o"]
    args = build_parser().parse_args(base)
    assert (args.clip, args.accumulate, args.precision, args.resume) == (DEFAULT_CLIP, 1, "float32", False)
    args = build_parser().parse_args([*base, "--clip", "0.5", "--accumulate", "4", "--precision", "mixed_bfloat16",
                                      "--resume"])
    assert (args.clip, args.accumulate, args.precision, args.resume) == (0.5, 4, "mixed_bfloat16", True)
    action = next(a for a in build_parser()._subparsers._group_actions[0].choices["finetune"]._subparsers
                  ._group_actions[0].choices[task]._actions if a.dest == "precision")
    assert tuple(action.choices) == PRECISIONS


@pytest.mark.parametrize("task", ["classify", "instruct", "prefer"])
def test_a_bad_accumulate_is_one_line_before_anything_is_read(task, tmp_path, capsys):
    argv = ["finetune", task, "--run", str(tmp_path / "run"), "--data", str(tmp_path / "missing"), "--out",
            str(tmp_path / "out"), "--accumulate", "0"]
    assert main(argv) == 2
    assert capsys.readouterr().err == "tfgpt finetune: error: --accumulate must be a positive integer, got 0\n"
    assert list(tmp_path.iterdir()) == []
