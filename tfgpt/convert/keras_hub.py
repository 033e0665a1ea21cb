"""Convert between a tfgpt :class:`~tfgpt.model.GPT` and keras-hub's ``GPT2Backbone``.

Both are GPT-2: pre-LN blocks, LayerNorm epsilon 1e-5, tanh GELU, a 4x MLP, biases everywhere
and an output head tied to the token embedding, so the weights map one to one. What differs is
the layout of the attention weights:

==========================  ============================  ====================================
weight                      tfgpt (``model.blocks[i]``)   keras-hub (``transformer_layers[i]``)
==========================  ============================  ====================================
token / position embedding  ``wte`` [V, d] / ``wpe``      ``token_embedding`` / ``position_embedding``
ln_1, ln_2                  ``ln_1``, ``ln_2``            ``_self_attention_layer_norm``,
                                                          ``_feedforward_layer_norm``
query, key, value           ``attn.c_attn`` [d, 3d] fused ``query``/``key``/``value`` EinsumDense,
                            q|k|v, heads contiguous       kernel [d, heads, head_dim],
                                                          bias [heads, head_dim]
attention output            ``attn.c_proj`` [d, d]        ``attention_output`` [heads, head_dim, d]
MLP                         ``mlp.c_fc``, ``mlp.c_proj``  ``_feedforward_intermediate_dense``,
                                                          ``_feedforward_output_dense`` (Dense)
final LayerNorm             ``ln_f``                      ``layer_norm``
==========================  ============================  ====================================

The q/k/v kernels are slices ``c_attn[:, 0:d]``, ``[:, d:2d]``, ``[:, 2d:3d]`` reshaped to
``[d, heads, head_dim]`` (tfgpt splits heads with a row-major reshape of the last axis, as does
keras-hub's EinsumDense); the output kernel is ``c_proj`` reshaped to ``[heads, head_dim, d]``.

Example:
    >>> from tfgpt.config import GPTConfig
    >>> from tfgpt.model import GPT
    >>> model = GPT(GPTConfig(vocab_size=100, block_size=32, n_layer=2, n_head=4, n_embd=64))
    >>> backbone = to_keras_hub(model)          # keras_hub.models.GPT2Backbone
    >>> backbone.num_layers, backbone.hidden_dim
    (2, 64)
    >>> same = from_keras_hub(backbone)         # a tfgpt GPT with the same weights
    >>> import numpy as np
    >>> ids = np.array([[1, 2, 3]], "int32")
    >>> bool(np.allclose(same(ids), model(ids), atol=1e-5))
    True
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfgpt.config import GPTConfig
from tfgpt.model.gpt import GPT

__all__ = ["from_keras_hub", "to_keras_hub"]

_KERAS_HUB_EPSILON = 1e-5  # GPT2Backbone hard-codes this LayerNorm epsilon.
_MLP_EXPANSION = 4  # tfgpt's MLP is Dense(4·d); GPT2Backbone's intermediate_dim must match.


def _import_keras_hub() -> Any:
    try:
        import keras_hub
    except ImportError as err:  # pragma: no cover - keras-hub is a declared dependency
        raise ImportError("keras-hub interop needs the keras-hub package: pip install keras-hub") from err
    return keras_hub


def _check_gpt2_compatible(config: GPTConfig) -> None:
    """Raise ``ValueError`` naming every option GPT2Backbone cannot represent."""
    problems = []
    if config.norm != "pre":
        problems.append(
            f"norm={config.norm!r}: GPT2Backbone only has pre-LN blocks (normalize_first=True); "
            "a post-LN model cannot be mapped"
        )
    if not config.tie_embeddings:
        problems.append(
            "tie_embeddings=False: GPT2Backbone's head is always the transposed token embedding; "
            "a separate lm_head cannot be mapped"
        )
    if not config.bias:
        problems.append(
            "bias=False: GPT2Backbone's Dense and LayerNorm layers always have biases/offsets; "
            "a bias-free model cannot be mapped"
        )
    if not np.isclose(config.layer_norm_epsilon, _KERAS_HUB_EPSILON, rtol=0, atol=1e-12):
        problems.append(
            f"layer_norm_epsilon={config.layer_norm_epsilon}: GPT2Backbone uses {_KERAS_HUB_EPSILON}"
        )
    if problems:
        raise ValueError("cannot convert this GPT to keras_hub GPT2Backbone:\n  - " + "\n  - ".join(problems))


def _assign(variable: Any, value: np.ndarray, what: str) -> None:
    expected = tuple(variable.shape)
    if tuple(value.shape) != expected:
        raise ValueError(f"{what}: shape {tuple(value.shape)} does not match target shape {expected}")
    variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))


def _np(variable: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable))


def to_keras_hub(model: GPT, dtype: Any = None) -> Any:
    """Build a ``keras_hub.models.GPT2Backbone`` holding ``model``'s weights.

    Args:
        model: a tfgpt ``GPT`` with pre-LN blocks, biases, a tied head and epsilon 1e-5.
        dtype: dtype policy for the backbone (default: the model's).

    Returns:
        The backbone. Its logits are ``backbone.token_embedding(hidden, reverse=True)``, or use
        ``keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)``.

    Raises:
        ValueError: the model has an option GPT2Backbone cannot represent.

    Example:
        >>> import keras_hub
        >>> from tfgpt.config import GPTConfig
        >>> from tfgpt.model import GPT
        >>> backbone = to_keras_hub(GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=32)))
        >>> lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
        >>> inputs = {"token_ids": np.zeros((1, 4), "int32"), "padding_mask": np.ones((1, 4), "int32")}
        >>> tuple(lm(inputs).shape)  # logits [batch, time, vocab]
        (1, 4, 50)
    """
    if not isinstance(model, GPT):
        raise TypeError(f"to_keras_hub expects a tfgpt GPT model, got {type(model).__name__}")
    c = model.config
    _check_gpt2_compatible(c)
    if not model.built:
        model.build((None, None))
    keras_hub = _import_keras_hub()
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=c.vocab_size,
        num_layers=c.n_layer,
        num_heads=c.n_head,
        hidden_dim=c.n_embd,
        intermediate_dim=_MLP_EXPANSION * c.n_embd,
        dropout=c.dropout,
        max_sequence_length=c.block_size,
        dtype=dtype if dtype is not None else model.dtype_policy.name,
    )
    _assign(backbone.token_embedding.embeddings, _np(model.wte.embeddings), "wte")
    _assign(backbone.position_embedding.position_embeddings, _np(model.wpe.embeddings), "wpe")
    for i, (block, layer) in enumerate(zip(model.blocks, backbone.transformer_layers, strict=True)):
        _block_to_keras_hub(block, layer, c, f"block {i}")
    _assign(backbone.layer_norm.gamma, _np(model.ln_f.gamma), "ln_f.gamma")
    _assign(backbone.layer_norm.beta, _np(model.ln_f.beta), "ln_f.beta")
    return backbone


def _block_to_keras_hub(block: Any, layer: Any, c: GPTConfig, p: str) -> None:
    """Copy one tfgpt ``TransformerBlock`` into a keras-hub ``TransformerDecoder`` (``p`` names it in errors)."""
    d, h, hd = c.n_embd, c.n_head, c.head_dim
    _assign(layer._self_attention_layer_norm.gamma, _np(block.ln_1.gamma), f"{p} ln_1.gamma")
    _assign(layer._self_attention_layer_norm.beta, _np(block.ln_1.beta), f"{p} ln_1.beta")
    _assign(layer._feedforward_layer_norm.gamma, _np(block.ln_2.gamma), f"{p} ln_2.gamma")
    _assign(layer._feedforward_layer_norm.beta, _np(block.ln_2.beta), f"{p} ln_2.beta")
    attn = layer._self_attention_layer
    qkv_kernel, qkv_bias = _np(block.attn.c_attn.kernel), _np(block.attn.c_attn.bias)  # [d, 3d], [3d]
    for j, dense in enumerate((attn.query_dense, attn.key_dense, attn.value_dense)):
        name = "qkv"[j]
        # [d, d] slice of the fused kernel -> [d, heads, head_dim]; bias [d] -> [heads, head_dim]
        _assign(dense.kernel, qkv_kernel[:, j * d : (j + 1) * d].reshape(d, h, hd), f"{p} {name} kernel")
        _assign(dense.bias, qkv_bias[j * d : (j + 1) * d].reshape(h, hd), f"{p} {name} bias")
    # c_proj [d, d] -> [heads, head_dim, d]
    _assign(attn.output_dense.kernel, _np(block.attn.c_proj.kernel).reshape(h, hd, d), f"{p} attn out")
    _assign(attn.output_dense.bias, _np(block.attn.c_proj.bias), f"{p} attn out bias")
    _assign(layer._feedforward_intermediate_dense.kernel, _np(block.mlp.c_fc.kernel), f"{p} c_fc")
    _assign(layer._feedforward_intermediate_dense.bias, _np(block.mlp.c_fc.bias), f"{p} c_fc bias")
    _assign(layer._feedforward_output_dense.kernel, _np(block.mlp.c_proj.kernel), f"{p} c_proj")
    _assign(layer._feedforward_output_dense.bias, _np(block.mlp.c_proj.bias), f"{p} c_proj bias")


def from_keras_hub(backbone: Any, dtype: Any = None) -> GPT:
    """Build a tfgpt ``GPT`` from a ``keras_hub.models.GPT2Backbone`` (or a ``GPT2CausalLM``).

    Args:
        backbone: the keras-hub GPT-2 backbone; a ``GPT2CausalLM`` is accepted and its backbone used.
        dtype: dtype policy for the new model (default: the backbone's).

    Returns:
        A built ``GPT`` (pre-LN, biases, tied head) with the backbone's weights.

    Raises:
        TypeError: ``backbone`` is not a keras-hub GPT-2 backbone.
        ValueError: its shape cannot be represented by tfgpt (e.g. ``intermediate_dim != 4·hidden_dim``).

    Example:
        >>> import keras
        >>> import keras_hub
        >>> backbone = keras_hub.models.GPT2Backbone(vocabulary_size=100, num_layers=2, num_heads=4,
        ...     hidden_dim=64, intermediate_dim=256, max_sequence_length=32, dropout=0.0)
        >>> model = from_keras_hub(backbone)
        >>> tuple(model(keras.ops.zeros((1, 8), "int32")).shape)  # logits [batch, time, vocab]
        (1, 8, 100)
    """
    backbone = _as_backbone(backbone)
    _check_backbone(backbone)
    config = GPTConfig(
        vocab_size=backbone.vocabulary_size,
        block_size=backbone.max_sequence_length,
        n_layer=backbone.num_layers,
        n_head=backbone.num_heads,
        n_embd=backbone.hidden_dim,
        dropout=float(backbone.dropout),
        bias=True,
        norm="pre",
        tie_embeddings=True,
        layer_norm_epsilon=_KERAS_HUB_EPSILON,
    )
    model = GPT(config, dtype=dtype if dtype is not None else backbone.dtype_policy.name)
    model.build((None, None))
    _assign(model.wte.embeddings, _np(backbone.token_embedding.embeddings), "token_embedding")
    _assign(model.wpe.embeddings, _np(backbone.position_embedding.position_embeddings), "position_embedding")
    for i, (block, layer) in enumerate(zip(model.blocks, backbone.transformer_layers, strict=True)):
        _block_from_keras_hub(block, layer, config.n_embd, f"transformer_layer_{i}")
    _assign(model.ln_f.gamma, _np(backbone.layer_norm.gamma), "layer_norm gamma")
    _assign(model.ln_f.beta, _np(backbone.layer_norm.beta), "layer_norm beta")
    return model


def _as_backbone(backbone: Any) -> Any:
    """The ``GPT2Backbone`` itself, or a ``GPT2CausalLM``'s; ``TypeError`` for anything else."""
    keras_hub = _import_keras_hub()
    if isinstance(backbone, keras_hub.models.GPT2CausalLM):
        backbone = backbone.backbone
    if not isinstance(backbone, keras_hub.models.GPT2Backbone):
        raise TypeError(f"from_keras_hub expects a keras_hub GPT2Backbone, got {type(backbone).__name__}")
    return backbone


def _check_backbone(backbone: Any) -> None:
    """Raise ``ValueError`` naming the first shape or option a tfgpt ``GPT`` cannot represent."""
    if backbone.hidden_dim % backbone.num_heads:
        raise ValueError(
            f"hidden_dim ({backbone.hidden_dim}) is not divisible by num_heads ({backbone.num_heads})"
        )
    if backbone.intermediate_dim != _MLP_EXPANSION * backbone.hidden_dim:
        raise ValueError(
            f"cannot convert GPT2Backbone to tfgpt GPT: intermediate_dim ({backbone.intermediate_dim}) "
            f"must be {_MLP_EXPANSION} * hidden_dim ({_MLP_EXPANSION * backbone.hidden_dim}), "
            "tfgpt's MLP width is fixed at 4x"
        )
    for i, layer in enumerate(backbone.transformer_layers):
        if not layer.normalize_first:
            raise ValueError(f"transformer_layer_{i} is post-LN (normalize_first=False); tfgpt needs pre-LN")
        if not np.isclose(layer.layer_norm_epsilon, _KERAS_HUB_EPSILON, rtol=0, atol=1e-12):
            raise ValueError(
                f"transformer_layer_{i} has layer_norm_epsilon={layer.layer_norm_epsilon}; expected 1e-5"
            )
        if getattr(layer, "_cross_attention_layer", None) is not None:
            raise ValueError(f"transformer_layer_{i} has cross-attention; tfgpt GPT has none")


def _block_from_keras_hub(block: Any, layer: Any, d: int, p: str) -> None:
    """Copy one keras-hub ``TransformerDecoder`` into a tfgpt ``TransformerBlock`` (``p`` names it in errors)."""
    _assign(block.ln_1.gamma, _np(layer._self_attention_layer_norm.gamma), f"{p} attention norm gamma")
    _assign(block.ln_1.beta, _np(layer._self_attention_layer_norm.beta), f"{p} attention norm beta")
    _assign(block.ln_2.gamma, _np(layer._feedforward_layer_norm.gamma), f"{p} feedforward norm gamma")
    _assign(block.ln_2.beta, _np(layer._feedforward_layer_norm.beta), f"{p} feedforward norm beta")
    attn = layer._self_attention_layer
    denses = (attn.query_dense, attn.key_dense, attn.value_dense)
    # each kernel [d, heads, head_dim] -> [d, d], joined q|k|v -> [d, 3d]; biases [heads, head_dim] -> [3d]
    kernel = np.concatenate([_np(x.kernel).reshape(d, d) for x in denses], axis=1)
    bias = np.concatenate([_np(x.bias).reshape(d) for x in denses], axis=0)
    _assign(block.attn.c_attn.kernel, kernel, f"{p} query|key|value kernel")
    _assign(block.attn.c_attn.bias, bias, f"{p} query|key|value bias")
    out_kernel = _np(attn.output_dense.kernel).reshape(d, d)  # [heads, head_dim, d] -> [d, d]
    _assign(block.attn.c_proj.kernel, out_kernel, f"{p} attention_output")
    _assign(block.attn.c_proj.bias, _np(attn.output_dense.bias), f"{p} attention_output bias")
    fc, out = layer._feedforward_intermediate_dense, layer._feedforward_output_dense
    _assign(block.mlp.c_fc.kernel, _np(fc.kernel), f"{p} feedforward_intermediate_dense kernel")
    _assign(block.mlp.c_fc.bias, _np(fc.bias), f"{p} feedforward_intermediate_dense bias")
    _assign(block.mlp.c_proj.kernel, _np(out.kernel), f"{p} feedforward_output_dense kernel")
    _assign(block.mlp.c_proj.bias, _np(out.bias), f"{p} feedforward_output_dense bias")
