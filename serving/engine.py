"""The generation worker: one thread runs every request, interleaved token by token.

Why one thread: generation is bound by the CPU or GPU, and PyTorch already
spreads each step over all cores, so a second generating thread would only
fight the first for them. Requests still progress together: the worker takes
up to `max_active` of them and advances each by one token in turn (each with
its own KV cache, see generation.py), so a new request gets its first token
after at most one step of each running one instead of waiting for them to
finish. Requests beyond that wait in a queue; beyond `max_waiting` they are
refused, so a flood cannot build an unbounded backlog.

The HTTP side lives on an asyncio event loop in another thread. A Job carries
events from the worker to that loop through call_soon_threadsafe, so the loop
never blocks on the model; cancelling a Job (the client went away) makes the
worker drop it before its next step.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading

from model import SpongeBob
from tokenizer import SpongeTokenizer

from .generation import Failed, Finished, Generation, GenerationRequest, Piece

log = logging.getLogger("serving")
Event = Piece | Finished | Failed


class Job:
    """One request in flight: the worker's events arrive on `events` in the event loop's thread."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop):
        self.request = request
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._loop = loop
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def send(self, event: Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server is shutting down
            self.cancel()


class QueueFull(Exception):
    """More requests are waiting than the server accepts."""


class Engine:
    def __init__(self, model: SpongeBob, tok: SpongeTokenizer, max_active: int = 8, max_waiting: int = 64):
        self.model, self.tok = model, tok
        self.max_active, self.max_waiting = max_active, max_waiting
        self._inbox: queue.Queue[Job | None] = queue.Queue()
        self._closing = threading.Event()
        self._active: list[tuple[Job, Generation]] = []
        # Counters for tests and benchmarks: most requests ever generated together,
        # and requests dropped because their client went away.
        self.peak_active = self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="generation-worker", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> Job:
        if self._inbox.qsize() >= self.max_waiting:
            raise QueueFull(f"{self._inbox.qsize()} requests are already waiting")
        job = Job(request, loop)
        self._inbox.put(job)
        return job

    @property
    def active_count(self) -> int:
        return len(self._active)

    def stop(self) -> None:
        """Ask the worker to end every request after its current step; returns at once."""
        self._closing.set()
        self._inbox.put(None)  # wakes a worker that sleeps waiting for work

    def close(self) -> None:
        self.stop()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._closing.is_set() and self._admit():
            for job, gen in list(self._active):
                self._advance(job, gen)
        # Tell every open request, so its stream ends now instead of hanging the shutdown.
        waiting = []
        while not self._inbox.empty():
            waiting.append(self._inbox.get_nowait())
        for job in [job for job, _ in self._active] + [job for job in waiting if job is not None]:
            job.send(Failed("the server is shutting down"))

    def _admit(self) -> bool:
        """Take waiting jobs while there is room; sleep when there is nothing to do. False: shut down."""
        while len(self._active) < self.max_active:
            try:
                job = self._inbox.get(block=not self._active)
            except queue.Empty:
                return True
            if job is None:
                return False
            if job.cancelled:  # its client left while it waited
                self.dropped += 1
                continue
            try:
                self._active.append((job, Generation(self.model, self.tok, job.request)))
                self.peak_active = max(self.peak_active, len(self._active))
            except Exception as e:  # a bad request that slipped past the HTTP checks
                log.exception("could not start a generation")
                job.send(Failed(f"could not start the generation: {e}"))
        return True

    def _advance(self, job: Job, gen: Generation) -> None:
        """One token for one job; a job that ended or was cancelled leaves the active list."""
        if job.cancelled:
            self.dropped += 1
        else:
            try:
                pieces, end = gen.step()
            except Exception as e:  # never let one request take the worker (and every other request) down
                log.exception("generation failed")
                pieces, end = [], Failed(f"generation failed: {type(e).__name__}: {e}")
            for piece in pieces:
                job.send(piece)
            if end is None:
                return
            job.send(end)
        gen.close()
        self._active.remove((job, gen))
