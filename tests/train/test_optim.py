"""tfgpt.train.optim: the warmup + decay schedule against hand-computed values, AdamW exclusions, and the
whole recipe step by step against nanoGPT's PyTorch loop."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfgpt.config import GPTConfig
from tfgpt.model.gpt import GPT
from tfgpt.train.config import TrainConfig
from tfgpt.train.optim import WarmupCosine, WarmupDecay, make_optimizer, make_schedule, no_decay_variables

# peak 1.0, floor 0.1, warmup 2, decay to step 10: the decay span is 8 steps.
# warmup: peak * (s + 1) / (warmup + 1) -> 1/3, 2/3; then floor + f(r) * 0.9 with r = (s - 2) / 8.
COSINE = {
    0: 1 / 3, 1: 2 / 3,
    2: 1.0,                                         # r = 0
    4: 0.1 + 0.9 * 0.5 * (1 + 0.7071067811865476),  # r = 1/4: cos(pi/4) = 0.70711 -> 0.868198
    6: 0.55,                                        # r = 1/2: half way between peak and floor
    8: 0.1 + 0.9 * 0.5 * (1 - 0.7071067811865476),  # r = 3/4 -> 0.231802
    10: 0.1, 25: 0.1,                               # at and past decay_steps: the floor
}
LINEAR = {2: 1.0, 4: 0.775, 6: 0.55, 9: 0.2125, 10: 0.1}   # f = 1 - r
WSD = {2: 1.0, 6: 1.0, 8: 1.0, 9: 0.55, 10: 0.1}            # cooldown 0.25: f = min(1, (1 - r) / 0.25)


@pytest.mark.parametrize("shape,expected", [("cosine", COSINE), ("linear", LINEAR), ("wsd", WSD)])
def test_schedule_hand_computed(shape, expected):
    s = WarmupDecay(1.0, warmup_steps=2, decay_steps=10, min_lr=0.1, shape=shape, cooldown=0.25)
    for step, lr in expected.items():
        assert s.value(step) == pytest.approx(lr, rel=1e-6), (shape, step)
        assert float(s(keras.ops.convert_to_tensor(step, "int64"))) == pytest.approx(lr, rel=1e-6), (shape, step)
    assert COSINE[4] == pytest.approx(0.868198, abs=1e-6) and COSINE[8] == pytest.approx(0.231802, abs=1e-6)


def test_schedule_nanogpt_numbers():
    """nanoGPT's defaults: peak 6e-4, floor 6e-5, warmup 2000, decay to 600000."""
    s = WarmupDecay(6e-4, warmup_steps=2000, decay_steps=600_000, min_lr=6e-5)
    assert s.value(0) == pytest.approx(6e-4 / 2001, rel=1e-6)
    assert s.value(1999) == pytest.approx(6e-4 * 2000 / 2001, rel=1e-6)
    assert s.value(301_000) == pytest.approx(3.3e-4, rel=1e-5)  # the middle of the decay: (6e-4 + 6e-5) / 2


def test_schedule_from_config_and_round_trip():
    s = make_schedule(TrainConfig(learning_rate=2e-3, min_lr=2e-4, warmup_steps=5, max_steps=50,
                                  lr_schedule="wsd", lr_cooldown=0.5))
    assert s.get_config() == {"peak_lr": 2e-3, "warmup_steps": 5, "decay_steps": 50, "min_lr": 2e-4,
                              "shape": "wsd", "cooldown": 0.5}
    serialized = keras.optimizers.schedules.serialize(s)
    assert serialized["registered_name"] == "tfgpt>WarmupDecay"
    again = keras.optimizers.schedules.deserialize(serialized)
    assert type(again) is WarmupDecay and again.get_config()["shape"] == "wsd"
    assert again.value(50) == pytest.approx(2e-4)


def test_old_name_still_deserializes():
    assert WarmupCosine is WarmupDecay
    old = {"module": "tfgpt.train.optim", "class_name": "WarmupCosine", "registered_name": "tfgpt>WarmupCosine",
           "config": {"peak_lr": 1e-3, "warmup_steps": 10, "decay_steps": 110, "min_lr": 1e-4}}
    s = keras.optimizers.schedules.deserialize(old)
    assert isinstance(s, WarmupDecay) and s.shape == "cosine" and s.value(60) == pytest.approx(5.5e-4, rel=1e-5)


def test_schedule_refuses_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        WarmupDecay(1e-3, 1, 10, shape="step")
    with pytest.raises(ValueError, match="cooldown"):
        WarmupDecay(1e-3, 1, 10, shape="wsd", cooldown=0.0)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 50), st.integers(1, 500), st.integers(0, 1000), st.sampled_from(["cosine", "linear", "wsd"]))
def test_schedule_stays_between_floor_and_peak(warmup, span, step, shape):
    s = WarmupDecay(6e-4, warmup, warmup + span, 6e-5, shape=shape, cooldown=0.25)
    lr = s.value(step)
    if step < warmup:
        assert lr == pytest.approx(6e-4 * (step + 1) / (warmup + 1), rel=1e-5)
    else:
        assert 6e-5 * (1 - 1e-6) <= lr <= 6e-4 * (1 + 1e-6)
        assert s.value(step + 1) <= lr * (1 + 1e-6)  # never rises after the warmup
    assert not math.isnan(lr)


def test_weight_decay_exclusions():
    gpt = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32))
    gpt.build((None, 16))
    excluded = {v.path for v in no_decay_variables(gpt)}
    assert any(p.endswith("wte/embeddings") for p in excluded) and any(p.endswith("wpe/embeddings") for p in excluded)
    for v in gpt.trainable_variables:
        is_matrix = len(v.shape) == 2 and "embeddings" not in v.path
        assert (v.path in excluded) == (not is_matrix), v.path
    opt = make_optimizer(TrainConfig(weight_decay=0.5), gpt)
    opt.build(gpt.trainable_variables)
    # with zero gradients, only decayed variables move
    before = [v.numpy().copy() for v in gpt.trainable_variables]
    opt.apply([np.zeros(v.shape, "float32") for v in gpt.trainable_variables], gpt.trainable_variables)
    for b, v in zip(before, gpt.trainable_variables, strict=True):
        moved = not np.array_equal(b, v.numpy())
        assert moved == (v.path not in excluded), v.path


def test_decay_embeddings_decays_every_matrix_as_nanogpt():
    gpt = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32))
    gpt.build((None, 16))
    excluded = {v.path for v in no_decay_variables(gpt, embeddings=False)}
    assert excluded == {v.path for v in gpt.trainable_variables if len(v.shape) < 2}
    cfg = TrainConfig(weight_decay=0.5, learning_rate=1e-2, warmup_steps=4, decay_embeddings=True)
    opt = make_optimizer(cfg, gpt)
    opt.build(gpt.trainable_variables)
    wte = gpt.wte.embeddings
    before = wte.numpy().copy()
    opt.apply([np.zeros(v.shape, "float32") for v in gpt.trainable_variables], gpt.trainable_variables)
    lr0 = 1e-2 * 1 / (4 + 1)  # the warmup's first rate
    np.testing.assert_allclose(wte.numpy(), before * (1 - 0.5 * lr0), rtol=1e-6)




def test_optimizer_change_names_each_setting_a_resume_changes():
    from tfgpt.train.optim import optimizer_change

    base = TrainConfig()
    assert optimizer_change(base, TrainConfig(max_steps=9, learning_rate=5e-4)) is None  # the schedule's, not these
    assert optimizer_change(base, TrainConfig(beta2=0.95, grad_clip=0.5, epsilon=1e-6)) == (
        "the optimizer settings changed (beta2 0.99 -> 0.95; epsilon 1e-08 -> 1e-06; grad_clip 1.0 -> 0.5)")


def test_schedule_change_says_how_the_rate_moves():
    from tfgpt.train.optim import make_schedule, schedule_change

    old = TrainConfig(max_steps=300, learning_rate=3e-4, min_lr=3e-5, warmup_steps=10)
    new = TrainConfig(max_steps=400, learning_rate=3e-4, min_lr=3e-5, warmup_steps=10)
    note = schedule_change(old, new, 300)
    assert "decay ends at step 300 -> 400" in note
    assert f"{make_schedule(old).value(300):.1e} -> {make_schedule(new).value(300):.1e}" in note
    assert make_schedule(old).value(300) == pytest.approx(3e-5) and make_schedule(new).value(300) > 3e-5
    assert schedule_change(old, old, 300) is None
    fixed = TrainConfig(max_steps=400, learning_rate=3e-4, min_lr=3e-5, warmup_steps=10, lr_decay_steps=300)
    assert schedule_change(old, fixed, 300) is None  # decay pinned: a longer run keeps the curve


# -- nanoGPT's training loop in PyTorch, step by step -------------------------------------------------------------

STEPS, LR, MIN_LR, WARMUP, DECAY = 24, 1e-2, 1e-3, 4, 0.5


def _nanogpt_lr(it: int) -> float:
    """nanoGPT train.py's get_lr, written out (lr_decay_iters = STEPS)."""
    if it < WARMUP:
        return LR * (it + 1) / (WARMUP + 1)
    ratio = (it - WARMUP) / (STEPS - WARMUP)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


def _torch_nanogpt_run(state: dict[str, np.ndarray], cfg: GPTConfig, xs: np.ndarray, ys: np.ndarray):
    """Train transformers' GPT-2 (tfgpt's architecture) from ``state`` the way nanoGPT's train.py does: AdamW
    decaying every 2-D tensor, get_lr per step, clip_grad_norm_ 1.0. Returns the losses and the weights."""
    import torch
    import transformers
    from torch.nn import functional as F

    hf = transformers.GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
                                 n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                                 attn_pdrop=0.0, activation_function="gelu_new", tie_word_embeddings=True)
    model = transformers.GPT2LMHeadModel(hf)
    missing, unexpected = model.transformer.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()},
                                                            strict=False)
    assert not unexpected and all(k.endswith("attn.bias") for k in missing), (missing, unexpected)  # masks only
    params = dict(model.transformer.named_parameters())
    groups = [{"params": [p for p in params.values() if p.dim() >= 2], "weight_decay": DECAY},
              {"params": [p for p in params.values() if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.99), eps=1e-8)
    losses = []
    for it, (x, y) in enumerate(zip(xs, ys, strict=True)):
        for group in opt.param_groups:
            group["lr"] = _nanogpt_lr(it)
        logits = model(torch.from_numpy(x).long()).logits
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), torch.from_numpy(y).long().reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    return np.array(losses), {k: p.detach().numpy() for k, p in params.items()}


def _tfgpt_run(cfg: GPTConfig, xs: np.ndarray, ys: np.ndarray, decay_embeddings: bool):
    """The same steps through tfgpt's trainer and optimizer (one step per epoch: one logged loss per step)."""
    import tensorflow as tf

    from tfgpt.convert.gpt2_names import gpt2_state_dict
    from tfgpt.train.step import GPTTrainer

    keras.utils.set_random_seed(5)
    gpt = GPT(cfg)
    gpt.build((None, cfg.block_size))
    start = gpt2_state_dict(gpt)
    tcfg = TrainConfig(max_steps=STEPS, learning_rate=LR, min_lr=MIN_LR, warmup_steps=WARMUP, weight_decay=DECAY,
                       decay_embeddings=decay_embeddings, beta2=0.99, grad_clip=1.0)
    trainer = GPTTrainer(gpt, grad_clip=1.0)
    trainer.build((None, cfg.block_size))
    trainer.compile(optimizer=make_optimizer(tcfg, gpt), jit_compile=True)
    ds = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(1).map(lambda x, y: (x[0], y[0]))
    history = trainer.fit(ds, epochs=STEPS, steps_per_epoch=1, verbose=0).history
    return start, np.array(history["loss"]), gpt2_state_dict(gpt)


@pytest.mark.slow  # two XLA compiles and transformers: ~15-20 s
def test_training_follows_nanogpts_torch_loop_step_by_step():
    """nanoGPT's settings (decay_embeddings on) give nanoGPT's curve: from the same weights and batches, every
    step's loss and the final weights match transformers' GPT-2 trained by nanoGPT's loop in PyTorch. Exempting
    the embeddings (tfgpt's default) moves them measurably: the comparison can tell."""
    cfg = GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    rng = np.random.default_rng(0)  # windows of a learnable text: runs of 1..4 repeats of each id
    text = np.repeat(np.arange(4000) % cfg.vocab_size, rng.integers(1, 5, 4000))
    starts = rng.integers(0, len(text) - cfg.block_size - 1, (STEPS, 4))
    windows = np.stack([[text[s:s + cfg.block_size + 1] for s in row] for row in starts]).astype(np.int32)
    xs, ys = windows[..., :-1], windows[..., 1:]
    start, ours, weights = _tfgpt_run(cfg, xs, ys, decay_embeddings=True)
    theirs, torch_weights = _torch_nanogpt_run(start, cfg, xs, ys)
    assert theirs[-1] < theirs[0] - 1.0  # it trained
    np.testing.assert_allclose(ours, theirs, atol=1e-3)  # float32 XLA against torch: 3e-4 apart at most

    def apart(w: dict[str, np.ndarray], name: str) -> float:
        """How far a tensor ended from torch's, relative to how far torch moved it."""
        return float(np.linalg.norm(w[name] - torch_weights[name]) / np.linalg.norm(torch_weights[name] - start[name]))

    assert max(apart(weights, n) for n in weights) < 0.03  # 0.011 at most (a q/k/v kernel)
    embeddings = ("wte.weight", "wpe.weight")
    assert max(apart(weights, n) for n in embeddings) < 0.005  # 0.0011 at most
    _, _, exempt = _tfgpt_run(cfg, xs, ys, decay_embeddings=False)
    assert min(apart(exempt, n) for n in embeddings) > 0.02  # 0.042 and 0.056: undecayed, they drift off
