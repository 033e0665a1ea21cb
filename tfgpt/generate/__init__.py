"""Text generation: sampling, the KV-cached compiled decode loop, and the text-level API."""

from tfgpt.generate.generate import generate, generate_ids

__all__ = ["generate", "generate_ids"]
