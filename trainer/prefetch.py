"""Build the next steps' batches on a background thread while the device computes.

Building a step's micro-batches (gathering rows from the memory map, padding SFT
rows, weighting distillation targets) took 6-10 ms per step on the main thread,
during which a GPU sat idle. Here a thread builds them ahead, pins them (page-locked
memory lets the copy to the GPU run asynchronously), and hands them over through a
small queue. The order is exactly the generator's, so resume stays exact; an
exception in the thread (a bad record, a crash) is raised in the main thread at the
point where that batch would have been used.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

class Prefetcher:
    """Iterate over source on a daemon thread, `depth` items ahead, each passed through prepare.
    The queue carries (item, None) pairs, then (None, None) at the end or (None, error) on a failure."""

    def __init__(self, source: Iterator[Any], prepare: Callable[[Any], Any] | None = None, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(source, prepare), daemon=True,
                                        name="batch-prefetch")
        self._thread.start()

    def _fill(self, source: Iterator[Any], prepare: Callable[[Any], Any] | None) -> None:
        try:
            for item in source:
                if self._stop.is_set():
                    return
                self._put((item if prepare is None else prepare(item), None))
            self._put((None, None))
        except BaseException as e:  # handed to the consumer, raised where the batch was wanted
            self._put((None, e))

    def _put(self, pair: tuple) -> None:
        while not self._stop.is_set():  # a full queue is waited on, but never past close()
            try:
                return self._queue.put(pair, timeout=0.1)
            except queue.Full:
                continue

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> Any:
        item, error = self._queue.get()
        if error is not None:
            raise error
        if item is None:
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the thread (it may be blocked on a full queue) and let it exit."""
        self._stop.set()
        self._thread.join(timeout=5)
