"""Weight conversion: keras-hub interop (GPT-2 checkpoints in: see the other modules here).

Example:
    >>> from tfgpt.config import GPTConfig
    >>> from tfgpt.convert import from_keras_hub, to_keras_hub
    >>> from tfgpt.model import GPT
    >>> model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=32))
    >>> model_again = from_keras_hub(to_keras_hub(model))
    >>> model_again.config == model.config
    True
"""

from tfgpt.convert.keras_hub import from_keras_hub, to_keras_hub

__all__ = ["from_keras_hub", "to_keras_hub"]
