"""Pick a bounded, seeded, corpus-wide sample of text for tokenizer training.

The tokenizers BPE trainer keeps every distinct pre-token in memory and has no
sampling option, so feeding it a 10 GB corpus needs tens of GB of RAM. We give
it at most max_chars characters instead, chosen like this:

1. Documents are cut into chunks of at most CHUNK_CHARS characters (at line
   breaks when possible), so one huge .txt file cannot swallow the budget.
2. Every chunk gets a key: a 64-bit hash of its text, salted with the seed.
3. We keep the chunks with the smallest keys, as many as fit in the budget
   ("bottom-k" sampling), in a heap that never holds more than the budget.

Why hashes rather than random.random():
- one pass, memory bounded by the budget whatever the corpus size, and no
  need to know the corpus size in advance (no estimate, no counting pass);
- the sample is uniform over the whole corpus, not front-loaded;
- it depends only on the seed and the set of chunks, not on file order;
- identical chunks get identical keys, so repeated boilerplate is kept once
  and a chunk can never land in both the training and the held-out sample.

The held-out sample (for the compression report) is the lowest-key part of
that sample, so it is random too and disjoint from what the trainer sees.
"""

import hashlib
import heapq
from dataclasses import dataclass, field
from typing import Iterable, Iterator

CHUNK_CHARS = 4096
HELDOUT_MAX_SHARE = 0.1  # never hold out more than this share of the sample


def split_chunks(text: str, size: int = CHUNK_CHARS) -> Iterator[str]:
    """Cut text into pieces of at most size chars, at a line break when there is one."""
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = text.rfind("\n", start, end)
            if cut > start:
                end = cut + 1
        yield text[start:end]
        start = end


def _key(chunk: str, salt: bytes) -> int:
    digest = hashlib.blake2b(chunk.encode("utf-8", "surrogatepass"), digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "big")


@dataclass
class Sample:
    train: list[str] = field(default_factory=list)
    heldout: list[str] = field(default_factory=list)
    docs: int = 0  # documents read
    chars: int = 0  # characters read
    duplicates: int = 0  # chunks dropped because an identical one was already kept

    @property
    def train_chars(self) -> int:
        return sum(map(len, self.train))

    @property
    def heldout_chars(self) -> int:
        return sum(map(len, self.heldout))


def _clean(chunk: str) -> str:
    # JSON can smuggle in lone surrogates ("\ud800"), which are not UTF-8 and
    # which the Rust trainer rejects: replace them.
    try:
        chunk.encode("utf-8")
        return chunk
    except UnicodeEncodeError:
        return chunk.encode("utf-8", "replace").decode("utf-8")


def sample_texts(texts: Iterable[str], max_chars: int, heldout_chars: int, seed: int = 0) -> Sample:
    """One pass over texts: a training sample of about max_chars and a disjoint held-out one.

    The held-out part is at most heldout_chars and at most HELDOUT_MAX_SHARE
    of the sample, so a small corpus is not spent on measuring.
    """
    heldout_chars = min(heldout_chars, int(max_chars * HELDOUT_MAX_SHARE))
    budget = max_chars + heldout_chars
    salt = seed.to_bytes(8, "big", signed=True)
    heap: list[tuple[int, str]] = []  # (-key, chunk): heap[0] holds the largest kept key
    kept: set[int] = set()
    kept_chars, floor = 0, 1 << 64  # floor: the smallest key ever evicted; nothing >= it gets in
    out = Sample()
    for text in texts:
        out.docs += 1
        out.chars += len(text)
        for chunk in split_chunks(text):
            key = _key(chunk, salt)
            if key >= floor:
                continue
            if key in kept:
                out.duplicates += 1
                continue
            heapq.heappush(heap, (-key, _clean(chunk)))
            kept.add(key)
            kept_chars += len(chunk)
            while kept_chars > budget:  # evict the largest keys until the budget fits again
                neg_key, evicted = heapq.heappop(heap)
                kept.discard(-neg_key)
                kept_chars -= len(evicted)
                floor = min(floor, -neg_key)
    _split(sorted(heap, reverse=True), heldout_chars, out)  # reverse of -key order = increasing key
    return out


def _split(chunks_by_key: list[tuple[int, str]], heldout_chars: int, out: Sample) -> None:
    total = sum(len(chunk) for _, chunk in chunks_by_key)
    want = min(heldout_chars, int(total * HELDOUT_MAX_SHARE))  # the corpus may be smaller than the budget
    got = 0
    for _, chunk in chunks_by_key:
        if got < want:
            out.heldout.append(chunk)
            got += len(chunk)
        else:
            out.train.append(chunk)
