"""Stage 3, long SFT: the same chat training at 1024 tokens, from the SFT model.

    python sft_long.py                                   # built-in long dialogues, after python sft.py
    python sft_long.py --data_path data/sft_1024.jsonl   # your data

Only three things differ from sft.py (both use trainer/chat_data.py): rows of
1024 tokens, the demo's long dialogues, and the start, <out_dir>/sft.pth. The
weights go to <out_dir>/sft_long.pth.
"""
from tokenizer import SpongeTokenizer
from trainer import StageData, train_stage
from trainer.chat_data import ChatConfig, chat_data
from trainer.distributed import DistInfo
from trainer.loop import fit

# The seed's long-SFT run on a 24 GB GPU: rows of 1024 need a smaller batch.
REFERENCE = dict(epochs=2, batch_size=28, accumulation_steps=8, learning_rate=5e-4,
                 min_lr=5e-5, warmup_steps=100, max_seq_len=1024, save_interval=1000, eval_interval=500)
DEMO = dict(epochs=1, max_steps=40, batch_size=4, accumulation_steps=1, max_seq_len=1024,
            learning_rate=5e-4, min_lr=5e-5, warmup_steps=10, save_interval=40, eval_interval=20,
            log_interval=5, eval_batches=5)


def build_data(cfg: ChatConfig, tok: SpongeTokenizer, dist: DistInfo) -> StageData:
    return chat_data(cfg, tok, dist, "sft_long")


if __name__ == "__main__":
    train_stage("sft_long", __doc__, REFERENCE, DEMO, build_data, fit, config_cls=ChatConfig)
