"""The moderation hook of ``tfgpt serve --moderation RUN2``: a classifier screens each prompt and completion.

``RUN2`` is a classifier run dir (``tfgpt finetune classify``; loaded with ``load_classifier`` and run
through the same in-graph ``serving_default`` as its export) or a classifier export dir (``tfgpt
export`` of such a run). Each text gets ``{"label", "probability", "probabilities", "flagged"}``;
it is flagged when its most probable label is one of the flag labels (``--moderation-flag``; by
default every label but the first, e.g. ``spam`` of ``ham, spam``). The classifier reads a text's
first ``block_size`` tokens, as ``classify()`` does.

Actions (``--moderation-action``):

- ``label`` (default): every reply carries ``"moderation": {"prompt": ..., "completion": ...}`` per
  choice (``/v1/completions``, ``/v1/chat/completions``; in a stream, on the last chunk's choice) or
  per prediction (``:predict``, ``serving_default``; columnar: a ``moderation`` list in
  ``outputs``); nothing is withheld.
- ``block``: a flagged prompt is refused before the LM runs: HTTP 400. On the OpenAI routes the body
  is OpenAI's error, ``{"error": {"message": "prompt 0 flagged by moderation: label 'spam'
  (probability 0.970)", "type": "invalid_request_error", "param": "prompt", "code":
  "content_filter", "moderation": [...]}}``; on ``:predict`` it is ``{"error": "...", "code":
  "content_filter", "moderation": [...]}``. A flagged completion is withheld: text ``""`` and
  ``"finish_reason": "content_filter"``, as the OpenAI API does (``:predict``: ``num_tokens`` 0, ids
  all -1). Replies carry the ``moderation`` fields as in ``label``.

The chat route screens the last user message (the new text; the template around it is the
server's). Streaming: the prompt is screened before the stream opens (a flagged prompt gets the
400). In ``block`` mode the completion so far is screened before each piece is sent; a flagged one
ends the stream with a chunk whose ``finish_reason`` is ``content_filter``. The last chunk's choice
carries ``moderation`` (the whole text's result). The ``generate_ids`` signature (ids out, no text
to screen) is refused (403) while moderation is on; ``logits`` produces no text and is served as is.

Example:
    >>> m = Moderator("runs/spam", action="block")  # doctest: +SKIP
    >>> m.check(["WIN a prize now!"])  # doctest: +SKIP
    [{'label': 'spam', 'probability': 0.97, 'probabilities': {'ham': 0.03, 'spam': 0.97}, 'flagged': True}]
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse

from tfgpt.errors import ConfigError
from tfgpt.serve.errors import BadRequest
from tfgpt.serve.jsonio import jsonable
from tfgpt.serve.replies import error_body, is_openai_route
from tfgpt.serve.rest import predict_reply

ACTIONS = ("label", "block")
#: The in-graph tokenizer's error messages, as a moderation 400 names them.
_TEXT_ERRORS = {
    "not valid UTF-8": "a text is not valid UTF-8",
    "not in the char vocabulary": "a text holds characters that are not in the moderation classifier's vocabulary",
    "not in the vocabulary": "a text holds characters that are not in the moderation classifier's vocabulary",
}

Classify = Callable[[list[str]], tuple[list[str], np.ndarray]]


class Flagged(BadRequest):
    """A prompt flagged in ``block`` mode: HTTP 400 whose body also holds the moderation results."""

    def __init__(self, message: str, results: list[dict[str, Any]], param: str = "prompt") -> None:
        super().__init__(message, status=400)
        self.results, self.param, self.code = results, param, "content_filter"


async def flagged_reply(request: Any, exc: Flagged) -> JSONResponse:
    """The 400 body of a :class:`Flagged` prompt (registered with FastAPI by ``create_app``): OpenAI's
    error shape on its routes (the results in ``error.moderation``), else ``{"error", "code", "moderation"}``."""
    if is_openai_route(request.url.path):
        body = error_body(str(exc), exc.status, exc.param, exc.code, moderation=exc.results)
    else:
        body = {"error": str(exc), "code": exc.code, "moderation": exc.results}
    return JSONResponse(body, status_code=exc.status)


def _from_run(path: Path) -> tuple[Classify, list[str]]:
    """The classifier of a run dir as an in-graph ``serving_default`` (what its export would run)."""
    import tensorflow as tf

    from tfgpt.export.classifier import ClassifierModule
    from tfgpt.finetune.classify import load_classifier

    model, tokenizer, labels = load_classifier(path)
    module = ClassifierModule(model, tokenizer, labels)

    def classify(texts: list[str]) -> tuple[list[str], np.ndarray]:
        try:
            out = module.serving_default(tf.constant(texts, tf.string))
        except tf.errors.InvalidArgumentError as e:
            raise BadRequest(_text_error(e.message)) from None
        return [x.decode() for x in out["labels"].numpy()], out["probabilities"].numpy()

    return classify, labels


def _from_export(path: Path) -> tuple[Classify, list[str]]:
    """The ``serving_default`` of a classifier export dir (``tfgpt export`` of a classifier run)."""
    from tfgpt.serve.model import ExportedModel

    model = ExportedModel(path)
    if model.info.get("kind") != "classifier":
        raise ConfigError(f"--moderation {path}: export.json has no kind 'classifier' (an LM export?): "
                          f"give a classifier run or its export")

    def classify(texts: list[str]) -> tuple[list[str], np.ndarray]:
        try:
            out = model.predict("serving_default", {"texts": texts})
        except BadRequest as e:
            raise BadRequest(_text_error(str(e))) from None
        return [x.decode() for x in out["labels"]], out["probabilities"]

    return classify, [str(x) for x in model.info["labels"]]


def _text_error(message: str) -> str:
    return "moderation: " + next((v for k, v in _TEXT_ERRORS.items() if k in message), message.split("\n")[0])


class Moderator:
    """A loaded moderation classifier, its flag labels and action; screens the server's texts.

    Raises :class:`~tfgpt.errors.ConfigError` / ``RunDirError`` at startup for a source that is not a
    classifier run or export, an unknown action, or a flag label the classifier does not have.
    """

    def __init__(self, source: str | os.PathLike, action: str = "label", flags: Sequence[str] | None = None,
                 workers: int = 2) -> None:
        if action not in ACTIONS:
            raise ConfigError(f"--moderation-action must be one of {', '.join(ACTIONS)}; got {action!r}")
        path = Path(source)
        if not path.is_dir():
            raise ConfigError(f"--moderation {source}: no such directory (give a classifier run or its export)")
        self._classify, self.labels = _from_export(path) if (path / "export.json").is_file() else _from_run(path)
        unknown = [f for f in flags or () if f not in self.labels]
        if unknown:
            raise ConfigError(f"--moderation-flag {', '.join(unknown)}: not a label of {source} "
                              f"(its labels: {', '.join(self.labels)})")
        self.flags = list(dict.fromkeys(flags)) if flags else self.labels[1:]
        self.source, self.action = str(source), action
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tfgpt-moderation")

    def describe(self) -> str:
        """One line for the server's log: source, labels, flag labels, action."""
        return (f"moderation: {self.source} (labels {', '.join(self.labels)}); flagging {', '.join(self.flags)}; "
                f"action {self.action}")

    def check(self, texts: list[str]) -> list[dict[str, Any]]:
        """The moderation result of each text (a 400 :class:`BadRequest` if the classifier cannot read one)."""
        if not texts:
            return []
        labels, probs = self._classify(list(texts))
        return [{"label": label, "probability": float(p.max()),
                 "probabilities": {name: float(x) for name, x in zip(self.labels, p, strict=True)},
                 "flagged": label in self.flags} for label, p in zip(labels, probs, strict=True)]

    async def acheck(self, texts: list[str]) -> list[dict[str, Any]]:
        """:meth:`check` in the moderator's thread pool (the event loop keeps serving)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.check, list(texts))

    def withholds(self, result: dict[str, Any]) -> bool:
        return self.action == "block" and result["flagged"]

    async def screen_prompts(self, prompts: list[str], names: Sequence[str] | None = None,
                             param: str = "prompt") -> list[dict[str, Any]]:
        """Each prompt's result; in ``block`` mode a flagged prompt raises :class:`Flagged` (the 400), named
        as in ``names`` (default ``prompt 0``, ``prompt 1``, ...; ``param`` is the request field)."""
        results = await self.acheck(prompts)
        bad = [i for i, r in enumerate(results) if self.withholds(r)]
        if bad:
            r, name = results[bad[0]], names[bad[0]] if names else f"prompt {bad[0]}"
            raise Flagged(f"{name} flagged by moderation: label {r['label']!r} (probability {r['probability']:.3f})",
                          results, param)
        return results

    async def screen_choices(self, choices: list[Any], prompts: list[dict[str, Any]]) -> list[Any]:
        """Finished choices (:class:`~tfgpt.serve.replies.Choice`) with their results; in ``block`` mode a
        flagged completion is withheld: text ``""``, ``finish_reason`` ``content_filter``."""
        results = await self.acheck([c.text for c in choices])
        out = []
        for choice, p, r in zip(choices, prompts, results, strict=True):
            choice = choice._replace(moderation={"prompt": p, "completion": r})
            out.append(choice._replace(text="", finish_reason="content_filter") if self.withholds(r) else choice)
        return out

    async def predict(self, predict: Callable[[str, dict[str, Any]], Awaitable[dict[str, np.ndarray]]],
                      model: Any, signature: str, inputs: dict[str, Any], row_format: bool) -> dict[str, Any]:
        """A ``:predict`` reply: ``serving_default`` and ``complete`` moderated, ``generate_ids`` refused,
        others as they are."""
        if signature == "generate_ids":
            raise BadRequest("moderation is on: the generate_ids signature (ids out, no text to screen) is "
                             "disabled; use serving_default or /v1/completions", status=403)
        feeds = model.feeds(signature, inputs)  # the usual 400s for a malformed request, before moderation
        if signature not in ("serving_default", "complete") or "prompts" not in feeds:
            return predict_reply(await predict(signature, inputs), row_format)
        prompts = await self.screen_prompts([p.decode("utf-8") for p in feeds["prompts"].numpy()])
        out = {k: np.array(v) for k, v in (await predict(signature, inputs)).items()}  # writable copies
        results = await self.acheck(jsonable(out["completions"]))
        for i, r in enumerate(results):
            if self.withholds(r):
                out["completions"][i], out["ids"][i], out["num_tokens"][i] = b"", -1, 0
        mods = [{"prompt": p, "completion": r} for p, r in zip(prompts, results, strict=True)]
        reply = predict_reply(out, row_format)
        if row_format:
            for row, m in zip(reply["predictions"], mods, strict=True):
                row["moderation"] = m
        else:
            reply["outputs"]["moderation"] = mods
        return reply

    async def screen(self, deltas: AsyncIterator[Any], prompt: dict[str, Any]) -> AsyncIterator[Any]:
        """A stream of :class:`~tfgpt.serve.streaming.Delta` s with the completion screened: in ``block``
        mode the text so far is checked before each piece is sent, and a flagged one ends the stream
        (``finish_reason`` ``content_filter``); the last delta carries the results for the whole text."""
        text, last = "", None  # last: the result for ``text`` as it stands, if already computed
        try:
            async for d in deltas:
                if d.finish_reason is not None:
                    if last is None or d.text:
                        last = (await self.acheck([text + d.text]))[0]
                    yield d._replace(moderation={"prompt": prompt, "completion": last})
                    return
                last = (await self.acheck([text + d.text]))[0] if self.action == "block" else None
                if last is not None and last["flagged"]:
                    yield d._replace(text="", finish_reason="content_filter",
                                     moderation={"prompt": prompt, "completion": last})
                    return
                text += d.text
                yield d
        finally:
            await deltas.aclose()
