"""Text generation: sampling, the KV-cached compiled decode loop, and the text-level API.

``tfgpt.generate`` is both this package and the function :func:`generate`: the package is
callable, so ``tfgpt.generate(model, tokenizer, prompt)`` works however it was imported.
"""

import sys
import types

from tfgpt.generate.generate import generate, generate_ids

__all__ = ["generate", "generate_ids"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return generate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
