"""The generation worker: one thread runs every request, batched, one forward per step for all.

Why one thread: generation is bound by the CPU or GPU, and PyTorch already
spreads each step over all cores, so a second generating thread would only
fight the first for them. Within that thread the requests run *together*: each
holds a slot of one BatchDecoder (inference/batch.py), and every step is one
forward pass over every active request (rows of different lengths, each at its
own position, with its own sampling settings and seed), then at most one chunk
of one waiting prompt (--prefill_chunk), so a long prompt delays the others by
one chunk at a time. A request joins between steps as soon as a slot is free;
a finished or cancelled one frees its slot at once. Requests beyond max_active
wait in a queue; beyond max_waiting they are refused, so a flood cannot build an
unbounded backlog.

The HTTP side lives on an asyncio event loop in another thread. A Job carries
events from the worker to that loop through call_soon_threadsafe, so the loop
never blocks on the model; cancelling a Job (the client went away) makes the
worker drop it before its next step.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import secrets
import threading

import torch

from inference.batch import BatchDecoder
from model import SpongeBob
from tokenizer import SpongeTokenizer

from .generation import Failed, Finished, GenerationRequest, Piece, TextStream

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
    def __init__(self, model: SpongeBob, tok: SpongeTokenizer, max_active: int = 8, max_waiting: int = 64,
                 prefill_chunk: int = 256):
        self.model, self.tok = model, tok
        self.max_active, self.max_waiting = max_active, max_waiting
        self.decoder = BatchDecoder(model, max_active, prefill_chunk=prefill_chunk)
        self._inbox: queue.Queue[Job | None] = queue.Queue()
        self._closing = threading.Event()
        self._jobs: dict[int, tuple[Job, TextStream]] = {}  # slot -> its request
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
        return len(self._jobs)

    def stop(self) -> None:
        """Ask the worker to end every request after its current step; returns at once."""
        self._closing.set()
        self._inbox.put(None)  # wakes a worker that sleeps waiting for work

    def close(self) -> None:
        self.stop()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._closing.is_set() and self._admit():
            self._drop_cancelled()
            if self._jobs:
                self._step()
        # Tell every open request, so its stream ends now instead of hanging the shutdown.
        waiting = []
        while not self._inbox.empty():
            waiting.append(self._inbox.get_nowait())
        for job in [job for job, _ in self._jobs.values()] + [job for job in waiting if job is not None]:
            job.send(Failed("the server is shutting down"))

    def _admit(self) -> bool:
        """Give waiting jobs the free slots; sleep when there is nothing to do. False: shut down."""
        while not self.decoder.full:
            try:
                job = self._inbox.get(block=not self._jobs)
            except queue.Empty:
                return True
            if job is None:
                return False
            if job.cancelled:  # its client left while it waited
                self.dropped += 1
                continue
            try:
                r = job.request
                seed = r.seed if r.seed is not None else secrets.randbits(63)
                # A generator per request: a seeded request's output cannot depend on
                # which other requests were sampled beside it.
                rng = torch.Generator(device=self.model.embed.weight.device).manual_seed(seed)
                slot = self.decoder.add(r.prompt_ids, r.sampling, rng, r.budget)
                self._jobs[slot] = (job, TextStream(self.tok, r))
                self.peak_active = max(self.peak_active, len(self._jobs))
            except Exception as e:  # a bad request that slipped past the HTTP checks
                log.exception("could not start a generation")
                job.send(Failed(f"could not start the generation: {e}"))
        return True

    def _drop_cancelled(self) -> None:
        for slot, (job, _) in list(self._jobs.items()):
            if job.cancelled:
                self.dropped += 1
                self._free(slot)

    def _step(self) -> None:
        """One decode step for every request, then each request's new text; finished ones leave."""
        try:
            events = self.decoder.step()
        except Exception as e:  # never let a bug kill the worker: fail the requests in flight
            log.exception("generation failed")
            for slot, (job, _) in list(self._jobs.items()):
                job.send(Failed(f"generation failed: {type(e).__name__}: {e}"))
                self._free(slot)
            return
        for slot, token in events:
            job, text = self._jobs[slot]
            pieces, end = text.push(token) if token is not None else ([], None)
            seq = self.decoder.active[slot]
            if end is None and seq.finish is not None:
                more, end = text.end(seq.finish)
                pieces += more
            for piece in pieces:
                job.send(piece)
            if end is not None:
                job.send(end)
                self._free(slot)

    def _free(self, slot: int) -> None:
        self._jobs.pop(slot)
        self.decoder.remove(slot)
