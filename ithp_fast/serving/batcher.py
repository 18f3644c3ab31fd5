"""Dynamic batching: concurrent requests' texts scored together, each caller given its own scores.

:class:`DynamicBatcher` runs inside an asyncio event loop (the HTTP server's). Requests queue; one
worker thread scores a batch at a time, so the event loop keeps reading and answering requests while
the model runs. A batch takes every request queued when the worker is free, up to ``max_batch_size``
texts; when fewer are queued than the previous batch held (requests arrive concurrently) it waits for
more, at most ``max_wait_ms`` after its first request. A single caller is never kept waiting: one
request at a time runs at once. A request of more than ``max_batch_size`` texts runs alone, in
pieces of that size. If a batch fails, each of its requests is scored alone, so a failure reaches
only the request that causes it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

from .tokens import ScoredTexts

Score = Callable[[Sequence[str]], ScoredTexts]
Scores = tuple[list, list[bool]]
"""One request's answer: its scores and, for each text, whether it was cut."""


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


class BatcherClosed(RuntimeError):
    """The batcher was stopped before the request ran."""


class DynamicBatcher:
    """Batches the texts of concurrent :meth:`submit` calls for ``score``.

    Args:
        score: ``texts -> ScoredTexts`` for up to ``max_batch_size`` texts (called from one worker thread).
        max_batch_size: texts per call of ``score`` at most.
        max_wait_ms: how long a batch may wait for more requests after its first one (0: never wait).
    """

    def __init__(self, score: Score, *, max_batch_size: int = 32, max_wait_ms: float = 5.0) -> None:
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size: expected a positive int, got {max_batch_size!r}")
        if not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms: expected a number >= 0, got {max_wait_ms!r}")
        self.score, self.max_batch_size, self.max_wait = score, max_batch_size, max_wait_ms / 1000
        self._queue: collections.deque[_Request] = collections.deque()
        self._arrived: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ithp-fast-model")
        self._last_requests = 1
        self._busy = False
        self.batches = 0
        """Batches run so far."""
        self.texts = 0
        """Texts scored so far."""

    def start(self) -> None:
        """Start batching (in the running event loop)."""
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Finish the queued requests and the running batch, then stop."""
        if self._task is not None:
            while (self._queue or self._busy) and not self._task.done():
                await asyncio.sleep(0.001)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> Scores:
        """The scores of ``texts``, batched with whatever other requests are waiting."""
        if self._task is None:
            raise BatcherClosed("the server is not running")
        request = _Request(texts, asyncio.get_running_loop().create_future())
        self._queue.append(request)
        self._arrived.set()
        return await request.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            self._busy = True
            try:
                results = await loop.run_in_executor(self._executor, self._score_requests, batch)
            finally:
                self._busy = False
            self.batches += 1
            self.texts += sum(len(request.texts) for request in batch)
            for request, result in zip(batch, results):
                if request.future.done():  # the caller went away
                    continue
                if isinstance(result, BaseException):
                    request.future.set_exception(result)
                else:
                    request.future.set_result(result)

    async def _collect(self) -> list[_Request]:
        """The next batch: the first request, and those queued or arriving in time that fit."""
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        batch = [self._queue.popleft()]
        texts = len(batch[0].texts)
        deadline = batch[0].arrived + self.max_wait
        while texts < self.max_batch_size:
            if not self._queue:
                remaining = deadline - time.perf_counter()
                if len(batch) >= self._last_requests or remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                continue
            if texts + len(self._queue[0].texts) > self.max_batch_size:
                break
            request = self._queue.popleft()
            batch.append(request)
            texts += len(request.texts)
        self._last_requests = len(batch)
        return batch

    def _score_requests(self, batch: list[_Request]) -> list:
        """Each request's :data:`Scores` (or the exception it raised), from as few calls as fit."""
        if len(batch) == 1:
            return [self._score_alone(batch[0])]
        texts = [t for request in batch for t in request.texts]
        try:
            scored = self._score_in_pieces(texts)
        except Exception:
            return [self._score_alone(request) for request in batch]
        results, start = [], 0
        for request in batch:
            end = start + len(request.texts)
            results.append((scored.scores[start:end], scored.cut[start:end]))
            start = end
        return results

    def _score_alone(self, request: _Request):
        try:
            scored = self._score_in_pieces(request.texts)
        except Exception as err:
            return err
        return scored.scores, scored.cut

    def _score_in_pieces(self, texts: list[str]) -> ScoredTexts:
        step = self.max_batch_size
        if len(texts) <= step:
            return self.score(texts)
        return ScoredTexts.join([self.score(texts[i : i + step]) for i in range(0, len(texts), step)])
