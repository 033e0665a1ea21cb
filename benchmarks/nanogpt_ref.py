"""nanoGPT's model and training loop in PyTorch, the reference of ``bench_recipe.py``.

Written from nanoGPT's ``model.py`` and ``train.py`` as they train its CPU "baby GPT": pre-LN blocks,
``bias=False`` (train.py's default), exact (erf) GELU, normal(0.02) init with the residual projections at
0.02/sqrt(2 * n_layer), the head tied to ``wte``; AdamW that decays every 2-D tensor (embeddings included),
eps 1e-8; linear warmup then cosine to ``min_lr`` (``get_lr``); global-norm clip 1.0; batches of random
windows (``get_batch``). Two switches undo a difference from tfgpt for the ablation: ``decay_embeddings``
and ``gelu="tanh"``.

    .venv/bin/python benchmarks/nanogpt_ref.py --seed 1337 --iters 2000
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


@dataclass
class Recipe:
    """nanoGPT's CPU baby-GPT command: ``--block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
    --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`` on ``config/train_shakespeare_char.py``."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    batch_size: int = 12
    iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    decay_embeddings: bool = True
    gelu: str = "none"  # torch's name for the exact GELU; "tanh" is GPT-2's (and tfgpt's)


def char_split(text: str) -> tuple[np.ndarray, np.ndarray, int]:
    """nanoGPT's ``data/shakespeare_char/prepare.py``: sorted characters, first 90% train, last 10% val."""
    chars = sorted(set(text))
    lut = {c: i for i, c in enumerate(chars)}
    ids = np.array([lut[c] for c in text], dtype=np.int64)
    n = int(0.9 * len(ids))
    return ids[:n], ids[n:], len(chars)


class Block(nn.Module):
    def __init__(self, r: Recipe) -> None:
        super().__init__()
        d = r.n_embd
        self.n_head, self.gelu = r.n_head, r.gelu
        self.ln_1, self.ln_2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))  # [b, h, t, hd]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, d))  # [b, t, d]
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate=self.gelu))


class GPT(nn.Module):
    def __init__(self, r: Recipe, vocab: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, r.n_embd), nn.Embedding(r.block_size, r.n_embd)
        self.h = nn.ModuleList([Block(r) for _ in range(r.n_layer)])
        self.ln_f = nn.LayerNorm(r.n_embd, bias=False)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * r.n_layer) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # [b, t, vocab], the tied head


def make_optimizer(model: GPT, r: Recipe) -> torch.optim.AdamW:
    """nanoGPT's ``configure_optimizers``: decay the 2-D tensors, not the norms (nor, if asked, the embeddings)."""
    embeddings = {id(model.wte.weight), id(model.wpe.weight)}
    decay = [p for p in model.parameters()
             if p.dim() >= 2 and (r.decay_embeddings or id(p) not in embeddings)]
    rest = [p for p in model.parameters() if all(p is not q for q in decay)]
    groups = [{"params": decay, "weight_decay": r.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=r.learning_rate, betas=(r.beta1, r.beta2))


def get_lr(it: int, r: Recipe) -> float:
    """nanoGPT's ``get_lr``: linear warmup, cosine to ``min_lr`` at ``iters``, then ``min_lr``."""
    if it < r.warmup_iters:
        return r.learning_rate * (it + 1) / (r.warmup_iters + 1)
    if it > r.iters:
        return r.min_lr
    ratio = (it - r.warmup_iters) / (r.iters - r.warmup_iters)
    return r.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (r.learning_rate - r.min_lr)


def get_batch(data: torch.Tensor, r: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
    ix = torch.randint(len(data) - r.block_size, (r.batch_size,))
    x = torch.stack([data[i:i + r.block_size] for i in ix])
    y = torch.stack([data[i + 1:i + 1 + r.block_size] for i in ix])
    return x, y


def train(r: Recipe, seed: int, train_ids: np.ndarray, vocab: int) -> GPT:
    """nanoGPT's loop: set the step's rate, forward, backward, clip, step."""
    torch.manual_seed(seed)
    model = GPT(r, vocab)
    opt = make_optimizer(model, r)
    data = torch.from_numpy(train_ids)
    for it in range(r.iters):
        for group in opt.param_groups:
            group["lr"] = get_lr(it, r)
        x, y = get_batch(data, r)
        loss = F.cross_entropy(model(x).view(-1, vocab), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
        opt.step()
    return model


@torch.no_grad()
def score(model: GPT, windows: np.ndarray) -> float:
    """Mean next-token cross-entropy over ``windows`` ``[n, block + 1]`` (the scorer tfgpt's runs get too)."""
    model.eval()
    total, count = 0.0, 0
    for chunk in np.array_split(windows, max(1, len(windows) // 64)):
        w = torch.from_numpy(chunk)
        logits = model(w[:, :-1])
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum"))
        count += w[:, 1:].numel()
    return total / count


def val_windows(val_ids: np.ndarray, block: int) -> np.ndarray:
    """Every non-overlapping ``block + 1`` window of the val split, in order: ``[n, block + 1]``."""
    n = (len(val_ids) - 1) // block
    return np.stack([val_ids[i * block:i * block + block + 1] for i in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--no-embedding-decay", action="store_true", help="exempt wte/wpe from decay, as tfgpt")
    ap.add_argument("--gelu", default="none", choices=["none", "tanh"])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    r = Recipe(iters=args.iters, decay_embeddings=not args.no_embedding_decay, gelu=args.gelu)
    train_ids, val_ids, vocab = char_split(DATA.read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    model = train(r, args.seed, train_ids, vocab)
    wall = time.perf_counter() - t0
    print(json.dumps({"seed": args.seed, "iters": r.iters, "decay_embeddings": r.decay_embeddings, "gelu": r.gelu,
                      "val_loss": score(model, val_windows(val_ids, r.block_size)), "train_s": wall,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
