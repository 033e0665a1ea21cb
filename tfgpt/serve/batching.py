"""Dynamic batching for ``tfgpt serve``: concurrent completions merged into one ``complete`` call.

A decoder reading its weights once per step serves many rows for little more than the price of
one. :class:`Batcher` queues each ``serving_default`` request as rows (its prompts, each with its
``max_new_tokens``, ``temperature``, ``top_k`` and a seed of its own) and one thread runs them: it
takes the oldest request, adds those queued while the last batch ran and those that keep arriving
less than ``window_s`` apart, up to ``max_rows`` rows, and runs the export's ``complete`` signature
once for all of them. Rows decode independently in that signature, so a request gets the same
tokens whether it ran alone or batched. A request whose rows fail (a prompt the vocabulary lacks) fails alone: a
failed batch is rerun request by request.

Example:
    >>> rows = request_rows({"prompts": np.array([b"a", b"b"], object), "max_new_tokens": np.int32(8),
    ...                      "temperature": np.float32(0), "top_k": np.int32(0), "seed": np.int32(2**31 - 1)})
    >>> rows["seed"].tolist(), rows["max_new_tokens"].tolist()
    ([2147483647, -2147483648], [8, 8])
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tfgpt.seeds import seed32
from tfgpt.serve.errors import BadRequest

if TYPE_CHECKING:
    from tfgpt.serve.model import ExportedModel

DEFAULT_MAX_ROWS = 16
DEFAULT_WINDOW_MS = 5.0
#: A batch stops gathering this many windows after its window opened, however requests keep coming.
MAX_WINDOWS = 20
#: ``complete``'s inputs, one value per row.
ROW_KEYS = ("prompts", "max_new_tokens", "temperature", "top_k", "seed")


def request_rows(feeds: dict[str, Any]) -> dict[str, np.ndarray]:
    """``serving_default``'s feeds (scalar settings, typed as the signature takes them) as ``complete``'s
    rows: each setting repeated per prompt (same dtype), row ``r`` seeded ``seed32(seed + r)``, as
    ``serving_default`` seeds it in the graph."""
    prompts = np.asarray(feeds["prompts"], dtype=object).reshape(-1)
    rows = {"prompts": prompts}
    for key in ROW_KEYS[1:]:
        value = np.asarray(feeds[key])
        rows[key] = np.full(len(prompts), value, dtype=value.dtype)
    rows["seed"] = np.array([seed32(int(rows["seed"][0]) + r) for r in range(len(prompts))], np.int32)
    return rows


@dataclass
class _Request:
    """One request's rows, when it came and where its outputs go."""

    rows: dict[str, np.ndarray]
    arrived: float = field(default_factory=time.monotonic)
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

    @property
    def size(self) -> int:
        return len(self.rows["prompts"])

    @property
    def width(self) -> int:
        """The request's own ``max_new_tokens``: the width of its ids."""
        return int(self.rows["max_new_tokens"].max(initial=0))


class Batcher:
    """Runs ``model``'s ``complete`` signature for batches of queued requests, on a thread of its own.

    Args:
        model: the loaded export (its SavedModel must have ``complete``).
        max_rows: at most this many prompts per call (a larger request runs alone).
        window_s: how long a gathering batch waits for the next request to join it.
    """

    def __init__(self, model: ExportedModel, max_rows: int = DEFAULT_MAX_ROWS,
                 window_s: float = DEFAULT_WINDOW_MS / 1000) -> None:
        self.model, self.max_rows, self.window_s = model, max_rows, window_s
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self.calls = 0  # how many `complete` calls ran: a batch of n requests counts once
        self._last_end = 0.0  # when the last batch ended (time.monotonic())
        self._thread = threading.Thread(target=self._loop, name="tfgpt-batcher", daemon=True)
        self._thread.start()

    async def predict(self, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        """``serving_default``'s outputs for checked ``feeds`` (:meth:`ExportedModel.feeds`), batched."""
        request = _Request(request_rows({k: np.asarray(v) for k, v in feeds.items()}))
        self._queue.put(request)
        return await asyncio.wrap_future(request.future)

    def close(self) -> None:
        """Stop the thread once the queued requests have run."""
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        waiting: _Request | None = None
        while True:
            first = waiting or self._queue.get()
            if first is None:
                return
            group, waiting = self._gather(first)
            self._run(group)
            self._last_end = time.monotonic()
            if group[-1] is None:  # closing
                return

    def _gather(self, first: _Request) -> tuple[list, _Request | None]:
        """``first`` and the requests that join it: those queued, then each that arrives within the
        window of the one before (the window opens when ``first`` came or the last batch ended, if
        later; it stays open at most :data:`MAX_WINDOWS` windows). The request that would overflow
        ``max_rows`` waits for the next batch.

        Clients whose replies left together send their next requests a few milliseconds apart, so
        one window after the last batch would split them into two groups that then alternate."""
        group, size = [first], first.size
        opened = max(first.arrived, self._last_end)
        deadline = opened + self.window_s
        while size < self.max_rows:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            deadline = min(max(deadline, time.monotonic() + self.window_s), opened + MAX_WINDOWS * self.window_s)
            if item is None:  # closing: run what is here, then stop
                group.append(None)
                break
            if size + item.size > self.max_rows:
                return group, item
            group.append(item)
            size += item.size
        return group, None

    def _run(self, group: list[_Request | None]) -> None:
        """One ``complete`` call for ``group``'s rows, each request given its own slice; on a bad request
        each runs alone, so only its own future holds the error."""
        requests = [r for r in group if r is not None]
        if not requests:
            return
        merged = {k: np.concatenate([r.rows[k] for r in requests]) for k in ROW_KEYS}
        try:
            self.calls += 1
            out = self.model.run("complete", merged)
        except BadRequest as e:
            if len(requests) == 1:
                requests[0].future.set_exception(e)
            else:
                for r in requests:
                    self._run([r])
            return
        except Exception as e:  # noqa: BLE001 - the requests' handlers report it (a 500), the thread goes on
            for r in requests:
                r.future.set_exception(e)
            return
        start = 0
        for r in requests:
            end = start + r.size
            r.future.set_result({"completions": out["completions"][start:end], "ids": out["ids"][start:end, : r.width],
                                 "num_tokens": out["num_tokens"][start:end]})
            start = end
