"""Weight conversion: keras-hub interop (GPT-2 checkpoints in: see the other modules here).

Example:
    >>> from tfgpt.convert import from_keras_hub, to_keras_hub
    >>> backbone = to_keras_hub(model)
    >>> model_again = from_keras_hub(backbone)
"""

from tfgpt.convert.keras_hub import from_keras_hub, to_keras_hub

__all__ = ["from_keras_hub", "to_keras_hub"]
