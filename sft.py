"""Stage 2, supervised fine-tuning: learn to answer in chat turns, at 512 tokens.

    python sft.py                                        # built-in demo dialogues, after python pretrain.py
    python sft.py --data_path data/sft_mini_512.jsonl    # your data; defaults follow the seed run
    torchrun --nproc_per_node 4 sft.py --data_path data/sft_mini_512.jsonl

What is special about this stage (everything else lives in trainer/):
  data   conversations in any of minimind / sharegpt / openai / alpaca format
         (detected, or --data_format), tokenized once in ChatML with a loss
         mask (dataset/sft_tokenize.py), one conversation per row;
  loss   cross-entropy on the assistant replies only, each from its first
         token through its <|im_end|>;
  start  out/pretrain.pth (--init); the weights go to out/sft.pth.
"""
from tokenizer import SpongeTokenizer
from dataset.demo import ensure_demo_corpus
from dataset.sft_dataset import SFTDataset
from dataset.sft_tokenize import describe_chat, pretokenize_chat
from trainer import StageData, TrainConfig, cli_config, run_stage
from trainer.distributed import DistInfo

# The seed run on one 24 GB GPU.
REFERENCE = dict(init="out/pretrain.pth", epochs=2, batch_size=84, accumulation_steps=2, learning_rate=5e-4,
                 min_lr=5e-5, warmup_steps=100, max_seq_len=512, save_interval=1000, eval_interval=500)
# The CPU demo after the pretraining demo: a few minutes on the built-in dialogues.
DEMO = dict(init="out/pretrain.pth", epochs=1, max_steps=200, batch_size=16, accumulation_steps=1,
            learning_rate=1e-3, min_lr=1e-4, warmup_steps=10, save_interval=100, eval_interval=100,
            log_interval=5, eval_batches=10)


def chat_data(cfg: TrainConfig, tok: SpongeTokenizer, dist: DistInfo, demo_kind: str,
              reasoning: bool = False) -> StageData:
    """Chat data for SFT-like stages: the files given, or the built-in demo_kind dialogues.
    With reasoning, every reply is checked and normalised to <think>/<answer> form."""
    paths = cfg.data_path
    if not paths:
        paths = [str(ensure_demo_corpus(demo_kind))]
        if dist.is_main:
            print(f"no --data_path: training on the built-in demo dialogues {paths[0]}")
    corpus = pretokenize_chat(paths, tok, cfg.max_seq_len, truncation=cfg.truncation,
                              data_format=cfg.data_format or None, skip_bad=cfg.skip_bad,
                              val_fraction=cfg.val_fraction, seed=cfg.seed, show_progress=dist.is_main,
                              reasoning=reasoning)
    shard = dict(seed=cfg.seed, rank=dist.rank, world_size=dist.world_size)
    train = SFTDataset(corpus.train, cfg.max_seq_len, **shard)
    val = SFTDataset(corpus.val, cfg.max_seq_len, shuffle=False, **shard)
    return StageData(train, val, identity=corpus.dir.name, description=describe_chat(corpus))


def build_data(cfg: TrainConfig, tok: SpongeTokenizer, dist: DistInfo) -> StageData:
    return chat_data(cfg, tok, dist, demo_kind="sft")


if __name__ == "__main__":
    run_stage(cli_config(__doc__, REFERENCE, DEMO), "sft", build_data)
