"""Weight conversion: GPT-2 checkpoints in (Hugging Face, OpenAI TF, keras-hub), Hugging Face out, keras-hub interop.

``import_gpt2(from_dir, out_run)`` is ``tfgpt import-gpt2``; ``write_hf`` is ``tfgpt export --format hf``.

Example:
    >>> from tfgpt.config import GPTConfig
    >>> from tfgpt.convert import from_keras_hub, to_keras_hub
    >>> from tfgpt.model import GPT
    >>> model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=32))
    >>> model_again = from_keras_hub(to_keras_hub(model))
    >>> model_again.config == model.config
    True
"""

from tfgpt.convert.gpt2 import import_gpt2, read_gpt2
from tfgpt.convert.gpt2_names import gpt2_state_dict, model_from_gpt2_state_dict
from tfgpt.convert.hf import read_hf, write_hf
from tfgpt.convert.keras_hub import from_keras_hub, to_keras_hub
from tfgpt.convert.openai_ckpt import read_openai_ckpt

__all__ = ["from_keras_hub", "gpt2_state_dict", "import_gpt2", "model_from_gpt2_state_dict", "read_gpt2",
           "read_hf", "read_openai_ckpt", "to_keras_hub", "write_hf"]
