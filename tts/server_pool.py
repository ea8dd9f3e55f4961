"""Model work for the HTTP server: off the event loop, on a small thread pool, behind a bounded admission count.

Every synthesis or cloning request takes a slot before any work and gives it back when its last piece of work has
finished (not merely when the client went away), so at most `max_queue` requests hold memory at once; the next one
is refused with 503 instead of queueing without bound.

A stream advances one chunk per pool task. With one worker, concurrent streams therefore take turns chunk by chunk
(every client hears its first audio early), a slow reader holds no worker, and each request keeps at most one chunk
in memory while it waits for its reader.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

log = logging.getLogger("tts.server")
T = TypeVar("T")


class ServerBusy(Exception):
    """Every admission slot is taken."""


class InferencePool:
    def __init__(self, workers: int = 1, max_queue: int = 64):
        if workers < 1 or max_queue < 1:
            raise ValueError(f"workers and max_queue must be >= 1, got {workers} and {max_queue}")
        self.workers, self.max_queue = workers, max_queue
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="tts-infer")
        self._lock = threading.Lock()
        self._active = 0

    @property
    def active(self) -> int:
        return self._active

    def acquire(self) -> None:
        with self._lock:
            if self._active >= self.max_queue:
                raise ServerBusy(f"server busy: {self._active} requests in progress (limit {self.max_queue}); "
                                 "retry shortly")
            self._active += 1

    def release(self) -> None:
        with self._lock:
            self._active -= 1

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        return self._executor.submit(_without_grad, fn)

    async def run(self, fn: Callable[[], T]) -> T:
        """`fn()` on the pool; cancelling the await drops it if it has not started yet."""
        return await asyncio.wrap_future(self.submit(fn))

    async def run_admitted(self, fn: Callable[[], T]) -> T:
        """`fn()` on the pool under an admission slot, held until `fn` is done even if the caller gives up."""
        self.acquire()
        try:
            future = self.submit(fn)
        except BaseException:
            self.release()
            raise
        future.add_done_callback(lambda _: self.release())
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _without_grad(fn: Callable[[], T]) -> T:
    # Grad mode is per thread, and a generator resumed here may have left it on elsewhere: no autograd graphs.
    with torch.no_grad():
        return fn()


class ChunkStream:
    """A synthesis iterator advanced one chunk per pool task; takes an admission slot (or raises ServerBusy) and
    holds it until `close` has run."""

    def __init__(self, pool: InferencePool, start: Callable[[], Iterator[np.ndarray]]):
        pool.acquire()
        self._pool, self._start = pool, start
        self._iterator: Iterator[np.ndarray] | None = None
        self._lock = threading.Lock()  # a close must wait for an in-flight `next` (generators are not reentrant)
        self._closed = False
        self._close_requested = False

    def _next(self) -> np.ndarray | None:
        with self._lock:
            if self._closed:
                return None
            if self._iterator is None:
                self._iterator = iter(self._start())
            return next(self._iterator, None)

    async def next(self) -> np.ndarray | None:
        """The next chunk, or None at the end."""
        return await self._pool.run(self._next)

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            close = getattr(self._iterator, "close", None)
            self._iterator = None
            if close is not None:
                close()

    def close(self) -> None:
        """Stop the synthesis (on the pool, after any in-flight chunk) and then give the slot back. Idempotent."""
        if self._close_requested:
            return
        self._close_requested = True
        try:
            future = self._pool.submit(self._close)
        except RuntimeError:  # the pool is shut down: nothing runs any more
            self._pool.release()
            return
        future.add_done_callback(self._closed_done)

    def _closed_done(self, future: Future) -> None:
        self._pool.release()
        if not future.cancelled() and future.exception() is not None:
            log.warning("closing a synthesis stream failed: %r", future.exception())
