"""Errors tfgpt raises for bad input: short messages that name the file, key or field at fault.

Each is also the matching builtin (``ValueError``, ``FileNotFoundError``), so callers that catch
those keep working; the CLI prints any :class:`TfgptError` as one line.

Example:
    >>> from tfgpt.tokenizers import CharTokenizer
    >>> try:
    ...     CharTokenizer.train(["ab"]).encode("abc")
    ... except TfgptError as e:
    ...     print(type(e).__name__, isinstance(e, ValueError), "'c' (U+0063) at position 2" in str(e))
    TokenizerError True True
"""


class TfgptError(Exception):
    """Base class: the CLI prints these as one line (no traceback) and exits with status 2."""


class ConfigError(TfgptError, ValueError):
    """A config file or dict has an unknown key, a wrong type or an invalid value.

    ``problems`` holds each problem's line when one error reports several (see :func:`all_problems`).
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


def all_problems(problems: list[str]) -> None:
    """Raise one :class:`ConfigError` listing every one of ``problems``, or return if there are none.

    Example:
        >>> all_problems(["a: bad", "b: worse"])
        Traceback (most recent call last):
        tfgpt.errors.ConfigError: 2 problems:
          - a: bad
          - b: worse
    """
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems), problems)


class TokenizerError(TfgptError, ValueError):
    """A tokenizer cannot be built, loaded, or cannot encode/decode the given input."""


class RunDirError(TfgptError, FileNotFoundError):
    """A run or export directory is missing or lacks a required file."""


class GenerationError(TfgptError, ValueError):
    """Arguments to generation are invalid (empty prompt, bad sampling parameters...)."""


class DataError(TfgptError, ValueError):
    """A corpus, data directory, shard or manifest is missing, corrupt or inconsistent."""


class ExportError(TfgptError, ValueError):
    """An export cannot be made, verified or served (bad format, failed check, bad request)."""


class ConvertError(TfgptError, ValueError):
    """Pretrained weights cannot be imported or written: a missing, extra or misshapen tensor, a
    bad or pickle-based file, hyper-parameters that disagree with the tensors."""


class TrainingInterrupted(TfgptError):
    """SIGINT/SIGTERM stopped training after a step and a checkpoint was written.

    The CLI exits with ``exit_code`` (128 + the signal's number: 130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code
