"""The moderation hook of ``tfgpt serve --moderation RUN2``: a classifier screens each prompt and completion.

``RUN2`` is a classifier run dir (``tfgpt finetune classify``; loaded with ``load_classifier`` and run
through the same in-graph ``serving_default`` as its export) or a classifier export dir (``tfgpt
export`` of such a run). Each text gets ``{"label", "probability", "probabilities", "flagged"}``;
it is flagged when its most probable label is one of the flag labels (``--moderation-flag``; by
default every label but the first, e.g. ``spam`` of ``ham, spam``). The classifier reads a text's
first ``block_size`` tokens, as ``classify()`` does.

Actions (``--moderation-action``):

- ``label`` (default): every reply carries ``"moderation": {"prompt": ..., "completion": ...}`` per
  choice (``/v1/completions``) or per prediction (``:predict``, ``serving_default``; columnar: a
  ``moderation`` list in ``outputs``); nothing is withheld.
- ``block``: a flagged prompt is refused before the LM runs: HTTP 400, ``{"error": "prompt 0 flagged
  by moderation: label 'spam' (probability 0.97)", "code": "content_filter", "moderation": [...]}``.
  A flagged completion is withheld: text ``""``, ``num_tokens`` 0 (``:predict``: ids all -1) and, in
  completions, ``"finish_reason": "content_filter"``, as the OpenAI API does. Replies carry the
  ``moderation`` fields as in ``label``.

Streaming: the prompt is screened before the stream opens (a flagged prompt gets the 400). In
``block`` mode the completion so far is screened before each piece is sent; a flagged one ends the
stream with ``data: {"text": "", "finish_reason": "content_filter", "moderation": ...}``. Both modes
end with ``data: {"moderation": {"prompt": ..., "completion": ...}}`` (the whole text) before
``data: [DONE]``. The ``generate_ids`` signature (ids out, no text to screen) is refused (403)
while moderation is on; ``logits`` produces no text and is served as is.

Example:
    >>> m = Moderator("runs/spam", action="block")  # doctest: +SKIP
    >>> m.check(["WIN a prize now!"])  # doctest: +SKIP
    [{'label': 'spam', 'probability': 0.97, 'probabilities': {'ham': 0.03, 'spam': 0.97}, 'flagged': True}]
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse

from tfgpt.errors import ConfigError
from tfgpt.serve.completions import completion_reply
from tfgpt.serve.errors import BadRequest
from tfgpt.serve.jsonio import jsonable
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

    def __init__(self, message: str, results: list[dict[str, Any]]) -> None:
        super().__init__(message, status=400)
        self.results = results


async def flagged_reply(_: Any, exc: Flagged) -> JSONResponse:
    """The 400 body of a :class:`Flagged` prompt (registered with FastAPI by ``create_app``)."""
    return JSONResponse({"error": str(exc), "code": "content_filter", "moderation": exc.results},
                        status_code=exc.status)


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

    async def screen_prompts(self, prompts: list[str]) -> list[dict[str, Any]]:
        """Each prompt's result; in ``block`` mode a flagged prompt raises :class:`Flagged` (the 400)."""
        results = await self.acheck(prompts)
        bad = [i for i, r in enumerate(results) if self.withholds(r)]
        if bad:
            r = results[bad[0]]
            raise Flagged(f"prompt {bad[0]} flagged by moderation: label {r['label']!r} "
                          f"(probability {r['probability']:.3f})", results)
        return results

    async def completions(self, predict: Callable[[dict[str, Any]], Awaitable[dict[str, np.ndarray]]],
                          inputs: dict[str, Any], model_name: str) -> dict[str, Any]:
        """A non-streamed ``/v1/completions`` reply, with prompts screened first and completions after."""
        prompts = await self.screen_prompts(inputs["prompts"])
        reply = completion_reply(await predict(inputs), model_name)
        results = await self.acheck([c["text"] for c in reply["choices"]])
        for choice, p, r in zip(reply["choices"], prompts, results, strict=True):
            choice["moderation"] = {"prompt": p, "completion": r}
            if self.withholds(r):
                choice.update(text="", num_tokens=0, finish_reason="content_filter")
        return reply

    async def predict(self, predict: Callable[[str, dict[str, Any]], Awaitable[dict[str, np.ndarray]]],
                      model: Any, signature: str, inputs: dict[str, Any], row_format: bool) -> dict[str, Any]:
        """A ``:predict`` reply: ``serving_default`` moderated, ``generate_ids`` refused, others as they are."""
        if signature == "generate_ids":
            raise BadRequest("moderation is on: the generate_ids signature (ids out, no text to screen) is "
                             "disabled; use serving_default or /v1/completions", status=403)
        feeds = model.feeds(signature, inputs)  # the usual 400s for a malformed request, before moderation
        if signature != "serving_default" or "prompts" not in feeds:
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

    async def stream(self, events: AsyncIterator[str], prompt: dict[str, Any]) -> AsyncIterator[str]:
        """``events`` (``streaming.sse_events``) with the completion screened: see the module docstring."""
        text, last = "", None  # last: the result for ``text`` as it stands, if already computed
        try:
            async for event in events:
                data = event.removeprefix("data: ").strip()
                payload = {} if data == "[DONE]" else json.loads(data)
                piece = payload.get("text", "") if isinstance(payload, dict) else ""
                if data == "[DONE]":
                    last = last or (await self.acheck([text]))[0]
                    yield f"data: {json.dumps({'moderation': {'prompt': prompt, 'completion': last}})}\n\n"
                elif piece and self.action == "block":
                    last = (await self.acheck([text + piece]))[0]
                    if last["flagged"]:
                        end = {"text": "", "finish_reason": "content_filter",
                               "moderation": {"prompt": prompt, "completion": last}}
                        yield f"data: {json.dumps(end)}\n\n"
                        yield "data: [DONE]\n\n"
                        return
                elif piece:
                    last = None
                text += piece
                yield event
        except BadRequest as e:  # the status is sent: report in the stream, then end it
            yield f"data: {json.dumps({'error': str(e)})}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            await events.aclose()
