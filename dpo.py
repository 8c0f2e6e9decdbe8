"""Stage 5, preference optimisation (DPO): prefer the chosen reply over the rejected one, after SFT.

    python dpo.py                                           # built-in demo pairs, after python sft.py
    python dpo.py --data_path dpo_zh_demo.json              # your pairs (format detected, or --data_format)
    python dpo.py --data_path pairs.jsonl --lora_rank 8     # LoRA: the reference is the base, adapters off
    python dpo.py --pref_loss simpo                         # no reference model at all

Everything special about this stage is in this file (the loop, precision, checkpoints and
resume are trainer/'s):
  data   preference pairs in MiniMind's, LLaMA-Factory's (sharegpt and alpaca ranking),
         MedicalGPT's or {"prompt", "chosen", "rejected"} shape (dataset/preference.py),
         tokenized once as SFT is; each pair's two conversations go through one forward
         together (dataset/pref_dataset.py).
  loss   --pref_loss sigmoid (DPO), ipo or simpo with --pref_beta, plus --pref_ftx x SFT
         loss on the chosen reply (below). The reference is a frozen copy of the starting
         model (with LoRA, the same model with its adapters off: trainer/reference.py).
  start  <out_dir>/sft.pth (--init); the weights go to <out_dir>/dpo.pth.

DPO refines a chat model; it cannot replace SFT (LLaMA-Factory's users: a DPO loss of
0.11 from a pretrained model taught nothing, while 0.034 after SFT was their best model).

The losses, in full:

A reply's log-probability under a model is the sum, over its trained tokens (SFT's
mask: the reply and its <|im_end|>), of log p(token | everything before). For a
pair, with pi the policy and ref the frozen reference, and beta = --pref_beta:

  sigmoid (DPO, Rafailov et al. 2023)
      z = (log pi(c) - log ref(c)) - (log pi(r) - log ref(r))
      loss = -log sigmoid(beta * z)
  ipo (Azar et al. 2023), on per-token averages a = log p / length, as TRL does
      z = (a_pi(c) - a_ref(c)) - (a_pi(r) - a_ref(r))
      loss = (z - 1 / (2 beta))^2
  simpo (Meng et al. 2024): no reference model, per-token averages, a margin gamma
      loss = -log sigmoid(beta * (a_pi(c) - a_pi(r)) - gamma)

--pref_ftx adds an SFT term on the chosen reply: ftx * (its mean negative log-prob per
token), LLaMA-Factory's pref_ftx. Rewards (TRL's names): rewards/chosen =
beta * (log pi(c) - log ref(c)) (SimPO: beta * a_pi(c)), rewards/margins their
difference, rewards/accuracies the share of pairs whose chosen reward is higher.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common.stages import stage
from dataset.demo import ensure_demo_corpus
from dataset.pref_dataset import PreferenceDataset
from dataset.sft_tokenize import describe_chat, pretokenize_chat
from model import IGNORE_INDEX, SpongeBob
from tokenizer import SpongeTokenizer
from trainer import StageData, StageLoss, train_stage
from trainer.chat_data import ChatConfig
from trainer.config import non_negative, one_of, option, positive
from trainer.stage import Batch, Reduce
from trainer.distributed import DistInfo
from trainer.loop import fit
from trainer.memory import Footprint
from trainer.reference import Reference, reference_model

PREF_LOSSES = ("sigmoid", "ipo", "simpo")
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
           "logps/rejected")


@dataclass
class DPOConfig(ChatConfig):
    pref_loss: str = option("sigmoid", "preference loss: sigmoid (DPO), ipo, or simpo (reference-free)",
                            check=one_of(*PREF_LOSSES))
    pref_beta: float = option(0.1, "beta: how far from the reference the policy may move (higher = closer)",
                              check=positive)
    pref_ftx: float = option(0.0, "weight of an SFT loss on the chosen reply, added to the preference loss",
                             check=non_negative)
    simpo_gamma: float = option(0.5, "simpo: the target reward margin")

    def footprint(self) -> Footprint:
        """A pair is two rows; the reference is a frozen copy (none for simpo, the base itself with LoRA)."""
        return Footprint(rows_per_item=2, frozen_models=int(self.pref_loss != "simpo" and not self.lora_rank))


# LLaMA-Factory's DPO examples: lr 5e-6, beta 0.1, a few epochs, on a GPU.
REFERENCE = dict(epochs=1, batch_size=16, accumulation_steps=4, learning_rate=5e-6, min_lr=5e-7, warmup_steps=20,
                 max_seq_len=1024, save_interval=500, eval_interval=100)
# The CPU demo after the SFT demo: a couple of minutes on the built-in pairs.
DEMO = dict(epochs=1, max_steps=60, batch_size=16, accumulation_steps=1, max_seq_len=512, learning_rate=1e-4,
            min_lr=1e-5, warmup_steps=5, save_interval=60, eval_interval=30, log_interval=5, eval_batches=10)


def build_data(cfg: DPOConfig, tok: SpongeTokenizer, dist: DistInfo) -> StageData:
    paths = cfg.data_path or [str(ensure_demo_corpus(stage("dpo").demo))]
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
    reference = None if cfg.pref_loss == "simpo" else reference_model(cfg.init, model, tok, device)
    return PreferenceLoss(reference, cfg.pref_loss, cfg.pref_beta, cfg.simpo_gamma, cfg.pref_ftx, cfg.batch_size)


# ------------------------------------------------------------------ the losses
def sequence_logps(logits: torch.Tensor, batch: Batch, n_sequences: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-prob of each sequence's trained targets, their count), by the batch's seq_index."""
    targets = batch["targets"].reshape(-1)
    logp = -F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets, ignore_index=IGNORE_INDEX,
                            reduction="none")
    trained = (targets != IGNORE_INDEX).float()
    index = batch["seq_index"].reshape(-1).clamp(min=0)  # padding has no trained target: its index is moot
    sums = torch.zeros(n_sequences, device=logits.device).index_add(0, index, logp * trained)
    counts = torch.zeros(n_sequences, device=logits.device).index_add(0, index, trained)
    return sums, counts


def pair_losses(policy: tuple[torch.Tensor, torch.Tensor], reference: tuple[torch.Tensor, torch.Tensor] | None,
                kind: str, beta: float, gamma: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, chosen reward, rejected reward) per pair, from (sums, counts) of the 2B sequences
    (chosen at even, rejected at odd indices) under the policy and the reference."""
    (sums, counts) = policy
    c, r = sums[0::2], sums[1::2]
    if kind == "simpo":
        ac, ar = c / counts[0::2].clamp(min=1), r / counts[1::2].clamp(min=1)
        return -F.logsigmoid(beta * (ac - ar) - gamma), beta * ac, beta * ar
    ref_sums, _ = reference
    rc, rr = ref_sums[0::2], ref_sums[1::2]
    if kind == "ipo":
        nc, nr = counts[0::2].clamp(min=1), counts[1::2].clamp(min=1)
        z = (c - rc) / nc - (r - rr) / nr
        return (z - 1 / (2 * beta)) ** 2, beta * (c - rc) / nc, beta * (r - rr) / nr
    if kind != "sigmoid":
        raise ValueError(f"--pref_loss {kind}: choose {', '.join(PREF_LOSSES)}")
    chosen, rejected = beta * (c - rc), beta * (r - rr)
    return -F.logsigmoid(chosen - rejected), chosen, rejected


class PreferenceLoss(StageLoss):
    """The engine's loss_fn for preference pairs: summed pair losses, and TRL's metrics.

    reference(batch) -> logits, run without gradients: a frozen copy of the starting
    model, or (LoRA) the policy itself with its adapters switched off; None for SimPO.
    """
    progress = (("rewards/accuracies", "acc"), ("rewards/margins", "margin"))

    def __init__(self, reference: Reference | None, kind: str, beta: float,
                 gamma: float, ftx: float, max_pairs: int):
        self.reference, self.kind, self.beta, self.gamma, self.ftx = reference, kind, beta, gamma, ftx
        self.max_pairs = max_pairs
        self._sums: torch.Tensor | None = None  # METRICS summed over pairs, then the pair count

    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        n = 2 * self.max_pairs  # a fixed size keeps shapes static; unused slots are masked below
        policy = sequence_logps(logits, batch, n)
        reference = None
        if self.reference is not None:
            with torch.no_grad():
                reference = sequence_logps(self.reference(batch), batch, n)
        losses, chosen, rejected = pair_losses(policy, reference, self.kind, self.beta, self.gamma)
        if self.ftx:
            losses = losses + self.ftx * (-policy[0][0::2] / policy[1][0::2].clamp(min=1))
        real = (torch.arange(self.max_pairs, device=logits.device) < batch["loss_count"]).float()
        if torch.is_grad_enabled():  # training steps only: validation must not mix into the logged rewards
            self._record(real, chosen, rejected, policy[0])
        return (losses * real).sum()

    def _record(self, real: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor, sums: torch.Tensor) -> None:
        values = torch.stack([chosen, rejected, (chosen > rejected).float(), chosen - rejected, sums[0::2],
                              sums[1::2]]).detach()
        step = torch.cat([(values * real).sum(dim=1), real.sum()[None]])
        self._sums = step if self._sums is None else self._sums + step

    def read_metrics(self, reduce: Reduce) -> dict[str, float]:
        """The metrics averaged over the pairs since the last read (all ranks: reduce sums them)."""
        if self._sums is None:
            return {}
        *totals, pairs = reduce(self._sums).tolist()
        self._sums = None
        return {name: total / max(pairs, 1.0) for name, total in zip(METRICS, totals)}


if __name__ == "__main__":
    train_stage("dpo", __doc__, REFERENCE, DEMO, build_data, fit, build_loss, DPOConfig)
