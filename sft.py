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
  start  <out_dir>/pretrain.pth (--init); the weights go to <out_dir>/sft.pth (--out_dir: out).
"""
from tokenizer import SpongeTokenizer
from trainer import StageData, train_stage
from trainer.chat_data import ChatConfig, chat_data
from trainer.distributed import DistInfo
from trainer.loop import fit

# The seed run on one 24 GB GPU.
REFERENCE = dict(epochs=2, batch_size=84, accumulation_steps=2, learning_rate=5e-4,
                 min_lr=5e-5, warmup_steps=100, max_seq_len=512, save_interval=1000, eval_interval=500)
# The CPU demo after the pretraining demo: a few minutes on the built-in dialogues.
DEMO = dict(epochs=1, max_steps=40, batch_size=16, accumulation_steps=1,
            learning_rate=1e-3, min_lr=1e-4, warmup_steps=10, save_interval=40, eval_interval=20,
            log_interval=5, eval_batches=10)


def build_data(cfg: ChatConfig, tok: SpongeTokenizer, dist: DistInfo) -> StageData:
    return chat_data(cfg, tok, dist, "sft")


if __name__ == "__main__":
    train_stage("sft", __doc__, REFERENCE, DEMO, build_data, fit, config_cls=ChatConfig)
