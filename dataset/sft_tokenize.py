"""Tokenize chat data once into the pretraining token format, plus a loss mask.

Each conversation becomes one document: its ChatML ids (dataset/chat_mask.py)
followed by the end-of-text id, with a uint8 mask beside the tokens (1 =
trained). The result is cached under out/cache/sft-<key>/ like pretokenized
text, keyed by the input files' identity, the tokenizer and every option that
changes the output, and built in a private folder renamed into place.

Over-long conversations (more than max_seq_len + 1 tokens) follow an explicit
policy, never a silent cut: "drop" leaves them out, "truncate" keeps their
first max_seq_len + 1 tokens (a reply may be cut mid-answer: the user asked
for it). Both are counted in meta["lengths"].

With reasoning=True (distillation), every assistant reply is first put in the
one canonical <think>/<answer> form (dataset/reasoning.py); a reply that cannot
be (unclosed <think>, duplicated tags, no thinking, an empty answer) is a bad
record: an error naming file:line, or counted and skipped under skip_bad.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tokenizer import SpongeTokenizer
from .chat_formats import ChatFormatError, iter_conversations
from .chat_mask import tokenize_chat
from .preference import iter_pairs
from .pretokenize import SPLIT_RULE, held_out_note, source_identity
from .readers import DataError, SkipStats, expand_paths
from .reasoning import normalise_reply
from .token_files import (FORMAT_VERSION, SPLITS, TOKEN_DTYPE, SplitWriter, TokenizedCorpus, load_tokenized,
                          mask_path, move_last_docs, raise_val_floor, split_counts, write_json_atomic)

TRUNCATION_POLICIES = ("drop", "truncate")


def sft_cache_key(files: list[Path], tok: SpongeTokenizer, options: dict) -> str:
    blob = json.dumps([source_identity(files), tok.identity()["sha256"], options, FORMAT_VERSION, SPLIT_RULE],
                      sort_keys=True)
    return "sft-" + hashlib.sha256(blob.encode()).hexdigest()[:20]


def _is_val(ids: list[int], seed: int, val_fraction: float) -> bool:
    """A conversation's split depends only on its tokens and the seed, never on file order."""
    digest = zlib.crc32(np.asarray(ids, dtype=np.uint32).tobytes(), seed & 0xFFFFFFFF)
    return digest / 2**32 < val_fraction


def _reasoning_messages(messages: list[dict], where: str, skip: SkipStats | None) -> list[dict] | None:
    """The conversation with every reply in canonical reasoning form; None if skipped."""
    out = []
    for i, m in enumerate(messages):
        try:
            out.append({**m, "content": normalise_reply(m["content"])} if m["role"] == "assistant" else m)
        except ChatFormatError as e:
            if skip is None:
                raise DataError(f"{where}: turn {i + 1}: {e}") from None
            skip.add(e.reason, where)
            return None
    return out


def _units(files: list[Path], options: dict, skip: SkipStats | None) -> Iterator[tuple[str, list[list[dict]]]]:
    """(where, conversations) per record: one conversation for SFT, the chosen and the rejected one
    (prompt + reply each) for preference pairs. A unit is kept, split and dropped as a whole."""
    for path in files:
        if options["kind"] == "pairs":
            for where, (prompt, chosen, rejected) in iter_pairs(path, options["data_format"], skip):
                yield where, [prompt + [{"role": "assistant", "content": reply}] for reply in (chosen, rejected)]
            continue
        for where, messages in iter_conversations(path, options["data_format"], skip, options["reasoning"]):
            if options["reasoning"] and (messages := _reasoning_messages(messages, where, skip)) is None:
                continue
            yield where, [messages]


def _fit(ids: list[int], mask: list[int], limit: int, truncation: str, lengths: dict) -> tuple | None:
    """(ids, mask) cut to the limit under the truncation policy, or None (and counted) when dropped."""
    if len(ids) <= limit:
        return ids, mask
    if truncation == "drop":
        lengths["dropped_too_long"] += 1
        return None
    if not any(mask[1:limit]):
        lengths["dropped_no_reply_left"] += 1
        return None
    lengths["truncated"] += 1
    return ids[:limit], mask[:limit]


def _write(files: list[Path], tok: SpongeTokenizer, out: Path, options: dict, skip: SkipStats | None,
           show_progress: bool) -> dict:
    """Stream every unit into out/; returns the length counts."""
    limit = options["max_seq_len"] + 1
    lengths = {"kept": 0, "dropped_too_long": 0, "truncated": 0, "dropped_no_reply_left": 0}
    writers = {s: SplitWriter(out, s) for s in SPLITS}
    masks = {s: open(mask_path(out, s), "wb") for s in SPLITS}
    # disable=None: no bar when stderr is not a terminal (logs, tests); a bar per record,
    # since one file can take hours.
    bar = tqdm(desc="tokenizing chats", unit=" rec", disable=None if show_progress else True)
    try:
        for where, conversations in _units(files, options, skip):
            bar.update()
            fitted = [_fit(*tokenize_chat(m, tok), limit, options["truncation"], lengths) for m in conversations]
            if any(f is None for f in fitted):
                continue
            lengths["kept"] += 1
            split = "val" if _is_val(fitted[0][0], options["seed"], options["val_fraction"]) else "train"
            for ids, mask in fitted:
                writers[split].add(np.asarray(ids + [tok.endoftext_id]), np.asarray([len(ids) + 1]))
                np.asarray(mask + [0], dtype=np.uint8).tofile(masks[split])
    finally:
        bar.close()
        for s in SPLITS:
            writers[s].close()
            masks[s].close()
    return lengths


def pretokenize_chat(paths: Sequence[str | Path], tok: SpongeTokenizer, max_seq_len: int, truncation: str = "drop",
                     data_format: str | None = None, skip_bad: bool = False, val_fraction: float = 0.01,
                     seed: int = 0, cache_root: Path = Path("out/cache"), show_progress: bool = True,
                     reasoning: bool = False, pairs: bool = False) -> TokenizedCorpus:
    """Tokenize chat files once (cached); raises DataError on bad input unless skip_bad.
    reasoning=True puts every reply in canonical <think>/<answer> form first (see above).
    pairs=True reads preference data (dataset/preference.py) and writes each pair as two
    documents in a row, chosen then rejected, always in the same split."""
    if truncation not in TRUNCATION_POLICIES:
        raise ValueError(f"--truncation {truncation}: choose drop or truncate")
    if not paths:
        raise DataError("no data path given: pass chat files (.jsonl/.json) or folders")
    files = expand_paths(paths)
    options = {"max_seq_len": max_seq_len, "truncation": truncation, "data_format": data_format,
               "val_fraction": val_fraction, "seed": seed, "skip_bad": skip_bad, "reasoning": reasoning,
               "kind": "pairs" if pairs else "sft"}
    final = Path(cache_root) / sft_cache_key(files, tok, options)
    if (final / "meta.json").is_file():
        return load_tokenized(final)
    build = final.with_name(f"{final.name}.building-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    unit = 2 if pairs else 1
    try:
        start, skip = time.time(), SkipStats() if skip_bad else None
        lengths = _write(files, tok, build, options, skip, show_progress)
        if lengths["kept"] == 0:
            what = "preference pair" if pairs else "conversation"
            raise DataError(f"no usable {what} in {', '.join(map(str, paths))} "
                            f"({json.dumps(lengths)}; {skip.summary() if skip else 'no records'})")
        if split_counts(build)["train"]["n_docs"] == 0:  # every unit hashed to val
            move_last_docs(build, "val", "train", unit)
        floor_moved = raise_val_floor(build, val_fraction, unit)
        meta = {"format_version": FORMAT_VERSION, "kind": options["kind"], "sources": [str(f) for f in files],
                "tokenizer_sha256": tok.identity()["sha256"], "endoftext_id": tok.endoftext_id,
                "token_dtype": np.dtype(TOKEN_DTYPE).name, "options": options, "lengths": lengths,
                "skipped": skip.summary() if skip else "skipped 0 bad records", "splits": split_counts(build),
                "val_floor_moved": floor_moved, "seconds": round(time.time() - start, 2)}
        write_json_atomic(build / "meta.json", meta)  # last: marks the folder complete
        shutil.rmtree(final, ignore_errors=True)
        os.rename(build, final)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return load_tokenized(final)


def describe_chat(corpus: TokenizedCorpus) -> str:
    m, lengths, splits = corpus.meta, corpus.meta["lengths"], corpus.meta["splits"]
    held_out = held_out_note({"val_fraction": m["options"]["val_fraction"],
                              "val_floor_moved": m.get("val_floor_moved", 0)})
    return (f"{corpus.dir}: {splits['train']['n_docs']:,} train conversations ({splits['train']['n_tokens']:,} "
            f"tokens), {splits['val']['n_docs']:,} ({splits['val']['n_tokens']:,} tokens){held_out}; over-long "
            f"(> {m['options']['max_seq_len']} tokens): {lengths['dropped_too_long']} dropped, "
            f"{lengths['truncated']} truncated ({m['options']['truncation']}); {m['skipped']}")
