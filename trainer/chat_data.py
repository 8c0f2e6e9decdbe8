"""The chat data every SFT-like stage trains on (sft, sft_long, distill): files or the built-in demo.

Shared here so that no stage script imports another: each stage only says which
demo dialogues it falls back on and whether replies must be reasoning replies.
"""
from __future__ import annotations

from dataclasses import dataclass

from common.stages import stage
from dataset.demo import ensure_demo_corpus
from dataset.packing import PACKING_MODES
from dataset.sft_dataset import SFTDataset, Weigh
from dataset.sft_tokenize import TRUNCATION_POLICIES, describe_chat, pretokenize_chat
from tokenizer import SpongeTokenizer

from .config import one_of, option
from .distributed import DistInfo
from .finetune import FinetuneConfig
from .stage import StageData


@dataclass
class ChatConfig(FinetuneConfig):
    """The options of the stages trained on chat rows (sft, sft_long, distill, dpo)."""
    # pack by default: never far behind group and far ahead on short chats (bench/RESULTS.md, "SFT layouts").
    packing: str = option("pack", "chat rows: pack (whole conversations packed into rows of --max_seq_len, each "
                                  "attending only to itself), group (one per row, batches of similar lengths) or "
                                  "none (one per row, padded to the longest of a random batch)",
                          check=one_of(*PACKING_MODES))
    truncation: str = option("drop", "chat data longer than --max_seq_len: drop it, or truncate it (may cut a reply)",
                             check=one_of(*TRUNCATION_POLICIES))


def chat_data(cfg: ChatConfig, tok: SpongeTokenizer, dist: DistInfo, stage_name: str,
              reasoning: bool = False, weigh: Weigh | None = None) -> StageData:
    """Chat data for SFT-like stages: the files given, or the stage's built-in demo dialogues
    (its row in common/stages.py names them).
    With reasoning, every reply is checked and normalised to <think>/<answer> form; weigh
    gives each conversation's targets their loss weights (distillation)."""
    paths = cfg.data_path
    if not paths:
        paths = [str(ensure_demo_corpus(stage(stage_name).demo))]
        if dist.is_main:
            print(f"no --data_path: training on the built-in demo dialogues {paths[0]}")
    corpus = pretokenize_chat(paths, tok, cfg.max_seq_len, truncation=cfg.truncation,
                              data_format=cfg.data_format or None, skip_bad=cfg.skip_bad,
                              val_fraction=cfg.val_fraction, seed=cfg.seed, show_progress=dist.is_main,
                              reasoning=reasoning)
    shard = dict(seed=cfg.seed, rank=dist.rank, world_size=dist.world_size, packing=cfg.packing, weigh=weigh)
    train = SFTDataset(corpus.train, cfg.max_seq_len, **shard)
    val = SFTDataset(corpus.val, cfg.max_seq_len, shuffle=False, **shard)
    layout = packing_note(cfg.packing, train.n_rows, corpus.train.n_docs, train.padding_share(cfg.batch_size))
    return StageData(train, val, identity=corpus.dir.name, description=f"{describe_chat(corpus)}\n  {layout}")


def packing_note(packing: str, rows: int, conversations: int, padding: float) -> str:
    """The rows' layout, and the trap in it: packed rows hold several conversations, so an epoch has
    that many times fewer optimizer steps than one conversation a row (the TAL-SCQ5K distillation
    of docs/real_run.md made 63 updates instead of 150 under the same flags, and learnt far less)."""
    note = f"--packing {packing}: {rows:,} rows from {conversations:,} conversations, {padding:.1%} of the " \
           f"epoch's positions are padding"
    per_row = conversations / max(rows, 1)
    if per_row >= 1.5:
        note += (f"; {per_row:.1f} conversations a row, so an epoch has {per_row:.1f}x fewer steps than "
                 f"with --packing none: raise --epochs to keep as many updates")
    return note
