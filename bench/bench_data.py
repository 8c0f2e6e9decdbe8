"""The pretraining data path on real Chinese text: pretokenize speed, loader cost, padding.

    python -m bench.bench_data [--device cpu] [--step_batch 8] [--skip_step]

1. Writes the pretraining-style text of ../shared/data (web pages, encyclopedia,
   Wikipedia, Lu Xun, the classic novels) once, shuffled, as {"text"} JSONL
   under out/bench/data/. Nothing of it is committed.
2. Stage rates that decide pretokenize.py's design: reading JSONL, BPE
   encoding on one core, and turning id lists into numpy.
3. Pretokenize throughput (input MB/s, all cores), then a cache hit's time.
4. Padding: our packed rows against the reference's one-document-per-row
   scheme at 512 tokens (truncated and padded, as MiniMind does; or split
   into several rows), over the same documents.
5. Loader time per micro-batch of 84 x 512 and 8 x 512 rows, and the time of
   a forward + backward step of the 29M model at --step_batch x 512 on
   --device, measured in the same run, so the loader's share of a step is
   a like-for-like figure.

Skips, with a message, when ../shared/data is absent.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from bench.device_info import describe_device
from dataset.pretokenize import TokenizedCorpus, pretokenize
from dataset.pretrain_dataset import PretrainDataset
from dataset.readers import SkipStats
from dataset.text_fields import iter_texts
from tokenizer import SpongeTokenizer
from model import IGNORE_INDEX, SpongeBob, get_preset
from tokenizer import load_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
# Pretraining-style sources (plain text, not chats), relative to DATA_DIR.
SOURCES = ("steel-llm-samples/2021-31_zh_head_0000_sample.jsonl",  # SkyPile web text
           "steel-llm-samples/part-010205-a894b46e_sample.jsonl",  # WanJuan web text
           "steel-llm-samples/563w_baidubaike_sample.json",  # encyclopedia
           "steel-llm-samples/wikipedia-cn-20230720-filtered_sample.json", "luxun", "classic-novels")
SEQ_LEN = 512


def write_corpus(path: Path, seed: int) -> int:
    """Every document of SOURCES once, shuffled, as {"text"} JSONL; returns the document count."""
    texts = [t for _, t in iter_texts([DATA_DIR / s for s in SOURCES], skip=SkipStats())]
    random.Random(seed).shuffle(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return len(texts)


def stage_rates(corpus: Path, tok: SpongeTokenizer) -> float:
    """MB/s of each stage on one core, over the first ~4 MB of text; returns the
    seconds per MB of the GIL-bound stages, which cap pretokenize's speed."""
    start, texts, size = time.perf_counter(), [], 0
    for _, text in iter_texts([corpus]):
        texts.append(text)
        size += len(text.encode("utf-8"))
        if size > 4e6:
            break
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    ids = [tok.encode(t) for t in texts]  # one thread: the per-core rate
    encode_s = time.perf_counter() - start
    encodings = Tokenizer.from_file(str(tok.json_path)).encode_batch(texts, add_special_tokens=False)
    start = time.perf_counter()
    [e.ids for e in encodings]  # what SpongeTokenizer.encode_batch does after the Rust threads finish
    lists_s = time.perf_counter() - start
    start = time.perf_counter()
    np.fromiter(itertools.chain.from_iterable(ids), dtype=np.uint16)  # as pretokenize.encode_texts does
    convert_s = time.perf_counter() - start
    mb = size / 1e6
    serial = (read_s + lists_s + convert_s) / mb
    print(f"stage rates on one core, {mb:.1f} MB of text: read JSONL {mb / read_s:.1f} MB/s, "
          f"BPE encode {mb / encode_s:.2f} MB/s, id lists {mb / lists_s:.0f} MB/s, ids -> numpy "
          f"{mb / convert_s:.0f} MB/s; GIL-bound work {serial:.3f} s/MB caps pretokenize at "
          f"~{1 / serial:.0f} MB/s (~{encode_s / mb / serial:.0f} cores of encoding)")
    return serial


def throughput(corpus: Path, tok: SpongeTokenizer, work: Path) -> TokenizedCorpus:
    mb = corpus.stat().st_size / 1e6
    cache_root = work / "cache"
    shutil.rmtree(cache_root, ignore_errors=True)
    start = time.perf_counter()
    result = pretokenize([corpus], tok, cache_root, show_progress=False)
    seconds = time.perf_counter() - start
    n_tokens = result.train.n_tokens + result.val.n_tokens
    print(f"pretokenize {mb:.1f} MB ({n_tokens:,} tokens, {os.cpu_count()} cores): {seconds:.1f} s = "
          f"{mb / seconds:.2f} MB/s, {n_tokens / seconds / 1e6:.2f} M tokens/s")
    start = time.perf_counter()
    pretokenize([corpus], tok, cache_root, show_progress=False)
    print(f"  cache hit: {(time.perf_counter() - start) * 1e3:.1f} ms")
    return result


def padding(corpus: TokenizedCorpus) -> None:
    """Share of row slots that are padding, ours against one document per 512-token row."""
    lengths = np.concatenate([np.diff(np.r_[tf.doc_starts, tf.n_tokens]) for tf in (corpus.train, corpus.val)])
    n_tokens = int(lengths.sum())
    kept = np.minimum(lengths, SEQ_LEN)  # truncated at 512, the rest dropped (MiniMind)
    split_rows = int(np.ceil(lengths / SEQ_LEN).sum())  # every piece of a document in its own row
    ds = PretrainDataset(corpus.train, SEQ_LEN, shuffle=False)
    ignored = sum(int((b["targets"] == IGNORE_INDEX).sum()) for b in ds.batches(256, 0))
    print(f"padding at {SEQ_LEN} tokens over {len(lengths):,} documents, {n_tokens:,} tokens "
          f"(median document {int(np.median(lengths))} tokens, {np.mean(lengths > SEQ_LEN):.1%} longer than {SEQ_LEN}):")
    print(f"  ours, packed: {ignored} padded targets in {ds.n_rows:,} rows of the train split = "
          f"{ignored / (ds.n_rows * SEQ_LEN):.5%}")
    print(f"  one document per row, truncated (MiniMind): {1 - kept.sum() / (len(lengths) * SEQ_LEN):.1%} padding, "
          f"and {1 - kept.sum() / n_tokens:.1%} of all tokens cut off and never trained on")
    print(f"  one document per row, split into {SEQ_LEN}-token pieces: "
          f"{1 - n_tokens / (split_rows * SEQ_LEN):.1%} padding")


def loader_ms(ds: PretrainDataset, batch_size: int, n: int = 30) -> float:
    """Mean milliseconds to produce one micro-batch (page cache warm: the files were just written)."""
    batches = ds.batches(batch_size, epoch=0)
    next(batches)
    start = time.perf_counter()
    count = sum(1 for _ in zip(range(n), batches))
    return (time.perf_counter() - start) * 1e3 / count


def step_ms(device: str, batch_size: int, steps: int = 3) -> float:
    """Mean milliseconds of forward + backward of the 29M model on random tokens."""
    torch.manual_seed(0)
    model = SpongeBob(get_preset("spongebob-29m")).to(device)
    x = torch.randint(0, model.config.vocab_size, (batch_size, SEQ_LEN + 1), device=device)
    times = []
    for i in range(steps + 1):  # the first step (allocations, kernel choice) is not timed
        start = time.perf_counter()
        model(x[:, :-1], x[:, 1:]).loss.backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return sum(times) / len(times) * 1e3


def loader_share(corpus: TokenizedCorpus, device: str, step_batch: int, skip_step: bool) -> None:
    ds = PretrainDataset(corpus.train, SEQ_LEN, seed=0)
    for batch_size in sorted({84, 8, step_batch}, reverse=True):
        ms = loader_ms(ds, batch_size)
        print(f"loader [cpu]: {batch_size} x {SEQ_LEN} rows: {ms:.3f} ms per micro-batch "
              f"({batch_size * SEQ_LEN / ms / 1e3:.2f} M tokens/s)")
    if skip_step:
        return
    step, load = step_ms(device, step_batch), loader_ms(ds, step_batch)
    print(f"step [{describe_device(device)}]: forward + backward, spongebob-29m fp32, {step_batch} x {SEQ_LEN}: "
          f"{step:.0f} ms")
    print(f"  loader share of a step at {step_batch} x {SEQ_LEN}: {load / (load + step):.4%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="out/bench/data", help="where the corpus and token files go")
    parser.add_argument("--device", default="cpu", help="device of the timed training step: cpu or cuda[:N]")
    parser.add_argument("--step_batch", type=int, default=8, help="rows of 512 tokens in the timed step")
    parser.add_argument("--skip_step", action="store_true", help="do not time the model step")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus shuffle")
    args = parser.parse_args()
    if not DATA_DIR.is_dir():
        print(f"skipped: no real data at {DATA_DIR} (this benchmark needs ../shared/data next to the repo)")
        return
    print(f"device: {describe_device('cpu')}")
    work = REPO_ROOT / args.work_dir
    corpus_path = work / "pretrain_corpus.jsonl"
    n_docs = write_corpus(corpus_path, args.seed)
    print(f"corpus: {corpus_path} ({corpus_path.stat().st_size / 1e6:.1f} MB, {n_docs:,} documents, "
          f"from {len(SOURCES)} real sources)")
    tok = load_tokenizer()
    stage_rates(corpus_path, tok)
    corpus = throughput(corpus_path, tok, work)
    padding(corpus)
    loader_share(corpus, args.device, args.step_batch, args.skip_step)


if __name__ == "__main__":
    main()
