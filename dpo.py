"""Stage 5, preference optimisation (DPO): prefer the chosen reply over the rejected one, after SFT.

    python dpo.py                                           # built-in demo pairs, after python sft.py
    python dpo.py --data_path dpo_zh_demo.json              # your pairs (format detected, or --data_format)
    python dpo.py --data_path pairs.jsonl --lora_rank 8     # LoRA: the reference is the base, adapters off
    python dpo.py --pref_loss simpo                         # no reference model at all

What is special about this stage (everything else lives in trainer/):
  data   preference pairs in MiniMind's, LLaMA-Factory's (sharegpt and alpaca ranking),
         MedicalGPT's or {"prompt", "chosen", "rejected"} shape (dataset/preference.py),
         tokenized once as SFT is; each pair's two conversations go through one forward
         together (dataset/pref_dataset.py).
  loss   --pref_loss sigmoid (DPO), ipo or simpo with --pref_beta, plus --pref_ftx x SFT
         loss on the chosen reply (trainer/preference.py). The reference is a frozen copy
         of the starting model (with LoRA, the same model with its adapters off).
  start  <out_dir>/sft.pth (--init); the weights go to <out_dir>/dpo.pth.

DPO refines a chat model; it cannot replace SFT (LLaMA-Factory's users: a DPO loss of
0.11 from a pretrained model taught nothing, while 0.034 after SFT was their best model).
"""
from dataclasses import dataclass

import torch

from dataset.demo import ensure_demo_corpus
from dataset.pref_dataset import PreferenceDataset
from dataset.sft_tokenize import describe_chat, pretokenize_chat
from model import SpongeBob, load_model
from model.lora import adapter_parameters, set_adapters
from tokenizer import SpongeTokenizer
from trainer import StageData, cli_config, run_stage
from trainer.chat_data import ChatConfig
from trainer.config import ConfigError, _f
from trainer.distributed import DistInfo
from trainer.preference import PREF_LOSSES, PreferenceLoss


@dataclass
class DPOConfig(ChatConfig):
    pref_loss: str = _f("sigmoid", "preference loss: sigmoid (DPO), ipo, or simpo (reference-free)")
    pref_beta: float = _f(0.1, "beta: how far from the reference the policy may move (higher = closer)")
    pref_ftx: float = _f(0.0, "weight of an SFT loss on the chosen reply, added to the preference loss")
    simpo_gamma: float = _f(0.5, "simpo: the target reward margin")


# LLaMA-Factory's DPO examples: lr 5e-6, beta 0.1, a few epochs, on a GPU.
REFERENCE = dict(epochs=1, batch_size=16, accumulation_steps=4, learning_rate=5e-6, min_lr=5e-7, warmup_steps=20,
                 max_seq_len=1024, save_interval=500, eval_interval=100)
# The CPU demo after the SFT demo: a couple of minutes on the built-in pairs.
DEMO = dict(epochs=1, max_steps=60, batch_size=16, accumulation_steps=1, max_seq_len=512, learning_rate=1e-4,
            min_lr=1e-5, warmup_steps=5, save_interval=60, eval_interval=30, log_interval=5, eval_batches=10)


def build_data(cfg: DPOConfig, tok: SpongeTokenizer, dist: DistInfo) -> StageData:
    paths = cfg.data_path or [str(ensure_demo_corpus("dpo"))]
    if not cfg.data_path and dist.is_main:
        print(f"no --data_path: training on the built-in demo pairs {paths[0]}")
    corpus = pretokenize_chat(paths, tok, cfg.max_seq_len, truncation=cfg.truncation,
                              data_format=cfg.data_format or None, skip_bad=cfg.skip_bad,
                              val_fraction=cfg.val_fraction, seed=cfg.seed, show_progress=dist.is_main, pairs=True)
    shard = dict(seed=cfg.seed, rank=dist.rank, world_size=dist.world_size, packing=cfg.packing)
    train = PreferenceDataset(corpus.train, cfg.max_seq_len, **shard)
    val = PreferenceDataset(corpus.val, cfg.max_seq_len, shuffle=False, **shard)
    pairs = f"{corpus.train.n_docs // 2:,} train / {corpus.val.n_docs // 2:,} val pairs"
    return StageData(train, val, corpus.dir.name, f"{pairs}; {describe_chat(corpus)}; --packing {cfg.packing}")


def build_loss(cfg: DPOConfig, tok: SpongeTokenizer, device: torch.device, model: SpongeBob) -> PreferenceLoss:
    if cfg.pref_loss not in PREF_LOSSES:
        raise ConfigError(f"--pref_loss {cfg.pref_loss}: choose {', '.join(PREF_LOSSES)}")
    if cfg.pref_beta <= 0 or cfg.pref_ftx < 0:
        raise ConfigError(f"--pref_beta {cfg.pref_beta:g} must be above 0 and --pref_ftx {cfg.pref_ftx:g} 0 or more")
    reference = None
    if cfg.pref_loss != "simpo":
        reference = AdaptersOff(model) if adapter_parameters(model) else FrozenCopy(cfg.init, tok, device)
    return PreferenceLoss(reference, cfg.pref_loss, cfg.pref_beta, cfg.simpo_gamma, cfg.pref_ftx, cfg.batch_size)


class FrozenCopy:
    """The starting model, loaded once more and frozen: the reference of full fine-tuning."""

    def __init__(self, path: str, tok: SpongeTokenizer, device: torch.device):
        self.model, _ = load_model(path, tokenizer=tok, device=device)
        self.model.requires_grad_(False)

    def __call__(self, batch: dict) -> torch.Tensor:
        return self.model(batch["input_ids"], **packed_inputs(batch)).logits


class AdaptersOff:
    """With LoRA the reference is the base itself: the same model with its adapters off, no second copy."""

    def __init__(self, model: SpongeBob):
        self.model = model

    def __call__(self, batch: dict) -> torch.Tensor:
        set_adapters(self.model, False)
        try:
            return self.model(batch["input_ids"], **packed_inputs(batch)).logits
        finally:
            set_adapters(self.model, True)


def packed_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("position_ids", "attn_mask") if k in batch}


if __name__ == "__main__":
    run_stage(cli_config(__doc__, REFERENCE, DEMO, DPOConfig, init_from="sft"), "dpo", build_data, build_loss)
