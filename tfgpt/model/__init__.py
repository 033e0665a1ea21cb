"""Keras layers and the GPT model (``keras.ops`` only: runs on the TensorFlow and JAX backends)."""

from tfgpt.model.attention import CausalSelfAttention
from tfgpt.model.block import MLP, TransformerBlock
from tfgpt.model.gpt import GPT

__all__ = ["GPT", "MLP", "CausalSelfAttention", "TransformerBlock"]
