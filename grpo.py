"""Stage 6, reinforcement learning with verifiable rewards (GRPO), after distillation.

    python grpo.py                                          # built-in problems, after python distill.py
    python grpo.py --data_path out/r1/gsm8k.jsonl           # your problems with gold answers
    python grpo.py --num_generations 8 --beta 0.04 --lora_rank 8

Everything special about this stage is in this file, its loop included (train(), below:
sample, reward, advantages, loss, step); precision, checkpoints and exact resume are the
engine's (trainer/engine.py), the rewards evaluation/rewards.py's:
  data   problems with gold answers, in any chat format (the R1 files of dataset.convert,
         the demo's r1 set, raw GSM8K and Ape210K): dataset/problems.py. Each micro-batch
         samples --num_generations completions of --batch_size problems from the current model.
  loss   group-relative advantages of the rewards (--reward_weights of accuracy, format and
         arithmetic: evaluation/rewards.py),
         PPO's clipped ratio (--epsilon, --num_iterations), token-level normalisation, and an
         optional k3 KL penalty to the starting model (--beta; 0 holds no reference).
  start  <out_dir>/distill.pth (--init); the weights go to <out_dir>/grpo.pth.
Validation is held-out accuracy: greedy answers to the held-out problems (the demo's
validation split r1_val, or --eval_file), scored by the same matcher as the rewards;
with --keep_best the weights of the best validation are the stage's weights.
Diagnostics in metrics.jsonl: correct (the share of right answers, apart from the
partial rewards), mixed_groups (0 < right < G: where the signal is), all_wrong_groups and
all_wrong_advantage_share (how much of the update comes from groups with no right answer,
i.e. from the partial rewards alone), entropy, completion_length, truncated, kl (--beta),
tool_use (the share of completions the --calculator wrote in).
r1_test stays untouched for the final comparison with eval_model.py.

The loss, in full:

Each step: for every problem, sample G completions from the current policy
(--num_generations, in one batch with the KV cache: inference/batch.py), reward each
(evaluation/rewards.py), and compare it with its group:

    A_i = r_i - mean(r_group)            (/ std(r_group) with --scale_rewards)

Every completion token t of completion i then gets the clipped surrogate of PPO plus,
with --beta, a k3 estimate of the KL divergence to the frozen starting model:

    ratio_t = pi(t) / pi_old(t)      (pi_old: the policy that sampled; ratio 1 with --num_iterations 1)
    loss_t  = -min(ratio_t * A_i, clip(ratio_t, 1 - eps, 1 + eps) * A_i)
              + beta * (exp(ref_t - logp_t) - (ref_t - logp_t) - 1)

summed over all completion tokens and divided by their number across the whole step
(the engine's normalisation): token-level, as DAPO and Dr GRPO do, so a long
completion does not weigh less per token than a short one. A group whose rewards are
all equal has zero advantage: it gives no signal, and its share is logged.

pi is the policy that sampled: softmax(logits / --temperature), the distribution the
rollouts were drawn from, so the gradient is that of the expected reward of the sampling
policy (docs/post_training.md, "Which policy"). Only the tokens it sampled are trained:
the stop token it drew, never a token the calculator or the thinking budget wrote.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common.device import autocast
from common.seeding import epoch_order, seed_from
from common.stages import stage
from dataset.demo import ensure_demo_corpus
from dataset.problems import Problem, describe_problems, iter_problems
from dataset.readers import DataError, SkipStats, expand_paths
from evaluation.rewards import REWARDS, accuracy_reward, parse_reward_weights
from evaluation.rollouts import ProblemEval, RolloutStats
from inference.batch import decode_batch
from inference.budget import think_budget
from inference.calculator import Calculator
from inference.sampling import SamplingConfig
from model import IGNORE_INDEX, SpongeBob
from tokenizer import SpongeTokenizer
from trainer import Engine, StageData, StageLoss, train_stage
from trainer.best import BestCheckpoint
from trainer.config import ConfigError, at_least, non_negative, option, parses, positive, within
from trainer.distributed import DistInfo, all_reduce_sum
from trainer.stage import Batch, Reduce
from trainer.finetune import FinetuneConfig
from trainer.memory import Footprint
from trainer.reference import Reference, reference_model


@dataclass
class GRPOConfig(FinetuneConfig):
    num_generations: int = option(8, "completions sampled per problem (the group)", check=lambda v: None if v >= 2
                                  else "GRPO compares completions within a group; it needs at least 2")
    max_completion_length: int = option(160, "most tokens per completion", check=at_least(1))
    temperature: float = option(1.0, "sampling temperature of the rollouts", check=positive)
    top_p: float = option(1.0, "nucleus sampling of the rollouts (1 = off)", check=within(0, 1, high_open=False))
    calculator: bool = option(False, "a calculator writes the result after each equation's '=' in the rollouts "
                                     "and the validation; its tokens are masked out of the loss "
                                     "(inference/calculator.py)")
    max_think_tokens: int = option(0, "budget forcing in the rollouts: close the thinking after this many tokens "
                                      "(0 = off); the forced tokens are masked out of the loss", check=at_least(0))
    reward_weights: str = option("accuracy:1,format:0.1", "rewards and their weights, name:weight,...",
                                 check=parses(parse_reward_weights, "reward_weights"))
    scale_rewards: bool = option(True, "divide advantages by the group's reward std (false: Dr GRPO, "
                                       "advantage = reward - group mean)")
    negative_advantages: bool = option(True, "also push down completions worse than their group's mean (false: "
                                             "learn only from the better ones, a filtered behaviour cloning that "
                                             "is stabler for a small model)")
    dynamic_sampling: bool = option(False, "train only on groups whose correctness differs (0 < right < G, DAPO): "
                                           "a group all right or all wrong teaches nothing about answers, and "
                                           "its partial rewards (format, arithmetic) would be all it teaches")
    epsilon: float = option(0.2, "PPO clip range of the probability ratio", check=lambda v: None if 0 < v < 1
                            else "must be in (0, 1)")
    num_iterations: int = option(1, "updates per rollout batch (1: the ratio is 1, a plain policy gradient)",
                                 check=at_least(1))
    beta: float = option(0.0, "weight of the k3 KL penalty to the starting model (0: no reference model is held)",
                         check=non_negative)
    eval_file: str = option("", "held-out problems for validation accuracy (default: the demo's r1_val, or "
                                "the --val_fraction split of --data_path)", resume="free")
    eval_samples: int = option(100, "held-out problems scored at each validation", check=at_least(1),
                               resume="free")
    keep_best: bool = option(True, "at the end, <out_dir>/grpo.pth is the weights of the validation with the best "
                                   "held-out accuracy (all kept in <out_dir>/grpo/best.pth as the run goes)",
                             resume="free")

    def footprint(self) -> Footprint:
        """A problem is --num_generations rows, first sampled with as many KV-cache slots; --beta holds
        a frozen reference (the base itself with LoRA)."""
        G = self.num_generations
        return Footprint(rows_per_item=G, decode_rows_per_item=G, frozen_models=int(bool(self.beta) and not self.lora_rank))

    def check(self) -> None:
        super().check()
        if self.num_iterations > 1 and self.accumulation_steps > 1:
            raise ConfigError(f"--num_iterations {self.num_iterations}: above 1 only with --accumulation_steps 1 "
                              "(each rollout is reused whole)")


# A GPU run on converted GSM8K or TAL-SCQ5K.
REFERENCE = dict(epochs=1, batch_size=16, accumulation_steps=1, learning_rate=1e-6, min_lr=1e-7, warmup_steps=10,
                 max_seq_len=1024, save_interval=100, eval_interval=50, max_completion_length=512)
# The CPU demo after the distillation demo. The settings follow the evidence (bench/LOG.md,
# chosen on r1_val, never on r1_test): the correctness reward alone, advantages without
# the std division (Dr GRPO), only groups whose correctness differs (DAPO), rollouts at
# temperature 0.5 and a small lr decaying to 0 (temperature 1 and lr 5e-5 made it worse),
# and the calculator: without it no setting raised held-out greedy accuracy significantly
# (the model's own sums are mostly wrong); with it, the model learns to work problems out
# instead of answering straight away (docs/post_training.md). --keep_best keeps the best validation.
DEMO = dict(epochs=1, max_steps=16, batch_size=16, accumulation_steps=1, learning_rate=2e-5, min_lr=0.0,
            warmup_steps=0, weight_decay=0.0, max_seq_len=512, save_interval=16, eval_interval=4, log_interval=4,
            max_completion_length=160, temperature=0.5, eval_samples=200, reward_weights="accuracy:1",
            scale_rewards=False, dynamic_sampling=True, calculator=True)
PROGRESS = (("reward", "reward"), ("correct", "correct"))  # what the progress bar shows besides the loss


def read_problems(paths: list[str], cfg: GRPOConfig) -> list[Problem]:
    skip = SkipStats() if cfg.skip_bad else None
    problems = [p for path in expand_paths(paths) for p in iter_problems(path, cfg.data_format or None, skip)]
    if not problems:
        raise DataError(f"no problem with a gold answer in {', '.join(paths)}")
    return problems


def build_data(cfg: GRPOConfig, tok: SpongeTokenizer, dist: DistInfo) -> StageData:
    train = read_problems(cfg.data_path or [str(ensure_demo_corpus(stage("grpo").demo))], cfg)
    if cfg.eval_file or not cfg.data_path:
        held_out = read_problems([cfg.eval_file or str(ensure_demo_corpus("r1_val"))], cfg)
    else:  # the last --val_fraction of the problems, never trained on
        cut = max(1, round(len(train) * cfg.val_fraction))
        train, held_out = train[:-cut], train[-cut:]
    problems = ProblemSet(train, tok, cfg, dist.rank, dist.world_size)
    val = ProblemEval(held_out[:cfg.eval_samples], tok, cfg.max_completion_length, dist.rank, dist.world_size,
                      calculator(tok, cfg.calculator))
    what = (f"{len(train):,} problems ({describe_problems(train)}), {cfg.num_generations} completions each; "
            f"{len(val.problems)} held out")
    return StageData(problems, val, f"problems:{len(train)}:{train[0].where}:{train[-1].where}", what)


def build_loss(cfg: GRPOConfig, tok: SpongeTokenizer, device: torch.device, model: SpongeBob) -> GRPOLoss:
    reference = reference_model(cfg.init, model, tok, device) if cfg.beta else None  # beta 0: none held
    return GRPOLoss(reference, cfg.beta, cfg.epsilon, cfg.temperature)


def calculator(tok: SpongeTokenizer, on: bool) -> Calculator | None:
    return Calculator.for_tokenizer(tok) if on else None


# ------------------------------------------------------------------ the loop
def train(engine: Engine, data: StageData, loss_fn: GRPOLoss) -> None:
    """GRPO's loop: sample a group of completions per problem from the current policy, reward them,
    turn the rewards into advantages within each group, and step on the loss; a rollout serves
    --num_iterations steps. The engine does the step's math, the logs, the saves and exact resume."""
    cfg, problems, held_out = engine.cfg, data.train, data.val
    weights, stats = parse_reward_weights(cfg.reward_weights), RolloutStats(cfg.num_generations)
    rollout = engine.restored.get("rollout")  # a --resume between a rollout's --num_iterations steps
    best = BestCheckpoint(engine, "val_accuracy", cfg.keep_best)  # held-out accuracy picks the weights kept

    def validate() -> dict:
        return best.track(held_out.evaluate(engine.model, engine.device, engine.dtype, all_reduce_sum))
    engine.start(validate=validate if held_out.problems else None, progress=PROGRESS)
    if engine.step == 0 and held_out.problems:
        best.measure_start(validate())
    try:
        while engine.step < engine.total_steps:
            engine.set_lr()
            micro_batches = problems.micro_batches(engine.step, engine.steps_per_epoch)
            for i, (epoch, index, iteration) in enumerate(micro_batches):
                if iteration == 0 or rollout is None:
                    picked = problems.rollout_problems(epoch, index)
                    seed = seed_from(cfg.seed, epoch, index, problems.rank)
                    seqs = sample_groups(engine, problems, picked, seed)          # 1. G completions a problem
                    scores, right = score(seqs, [problems.problems[k] for k in picked], cfg, problems.tok)  # 2. rewards
                    rewards = sum(w * scores[name] for name, w in weights.items()).view(-1, cfg.num_generations)
                    advantages = group_advantages(rewards, cfg.scale_rewards)    # 3. advantages in each group
                    if not cfg.negative_advantages:
                        advantages = advantages.clamp(min=0)
                    mixed = (right > 0) & (right < cfg.num_generations)  # correctness differs in the group
                    keep = mixed if cfg.dynamic_sampling else torch.ones_like(mixed)
                    stats.add(scores, rewards, seqs, right, advantages, keep)
                    rollout = training_rows(seqs, advantages.view(-1), keep.repeat_interleave(cfg.num_generations),
                                            problems.tok.endoftext_id)
                    if cfg.num_iterations > 1:  # pi_old for the ratio, and the rollout for an exact resume
                        rollout["old_logps"] = old_logps(engine, rollout, cfg.temperature)
                        engine.extra_state["rollout"] = rollout
                batch = engine.to_device(rollout)
                with engine.micro_batch(last=i == len(micro_batches) - 1):
                    loss = loss_fn(engine.forward(batch), batch)                  # 4. the loss, summed
                engine.backward(loss, batch)
            engine.update()                                                        # 5. the step
            engine.after_step(lambda reduce: stats.read(reduce, engine.device) | loss_fn.read_metrics(reduce))
    finally:
        engine.finish()
    best.keep()


class ProblemSet:
    """The training problems as chat prompts, and which of them each rollout samples: a seeded
    permutation per epoch, sharded over ranks like every dataset here, --batch_size problems a
    rollout. The sampling seeds depend on (seed, epoch, rollout, rank) alone, so a resumed run
    samples exactly what the uninterrupted one would have."""

    def __init__(self, problems: list[Problem], tok: SpongeTokenizer, cfg: GRPOConfig, rank: int = 0,
                 world_size: int = 1):
        self.problems, self.tok, self.cfg, self.rank, self.world_size = problems, tok, cfg, rank, world_size
        self.prompts = [tok.apply_chat_template(p.prompt, add_generation_prompt=True, tokenize=True) for p in problems]

    def rollouts_per_epoch(self) -> int:
        return -(-(len(self.problems) // self.world_size) // self.cfg.batch_size)

    def num_batches(self, batch_size: int) -> int:
        """Micro-batches per epoch: each rollout is trained on --num_iterations times."""
        return self.rollouts_per_epoch() * self.cfg.num_iterations

    def micro_batches(self, step: int, steps_per_epoch: int) -> list[tuple[int, int, int]]:
        """(epoch, rollout, iteration) of each micro-batch of a step; an epoch's last step takes what is left."""
        epoch, in_epoch = divmod(step, steps_per_epoch)
        first = in_epoch * self.cfg.accumulation_steps
        last = min(first + self.cfg.accumulation_steps, self.num_batches(self.cfg.batch_size))
        return [(epoch, *divmod(m, self.cfg.num_iterations)) for m in range(first, last)]

    def rollout_problems(self, epoch: int, index: int) -> list[int]:
        order = epoch_order(len(self.problems), self.cfg.seed, epoch, self.rank, self.world_size, True).tolist()
        return order[index * self.cfg.batch_size:(index + 1) * self.cfg.batch_size]


# ------------------------------------------------------------------ sampling, rewards, rows
def sample_groups(engine: Engine, problems: ProblemSet, picked: list[int], seed: int) -> list:
    """num_generations completions of each picked problem, all in one batch with the KV cache."""
    cfg, tok = problems.cfg, problems.tok
    sampling = SamplingConfig(max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature, top_p=cfg.top_p,
                              stop_ids=(tok.im_end_id, tok.endoftext_id), calculator=calculator(tok, cfg.calculator))
    prompts = [problems.prompts[k] for k in picked for _ in range(cfg.num_generations)]
    generators = [torch.Generator(device=engine.device).manual_seed(seed + j) for j in range(len(prompts))]
    budget = think_budget(tok, cfg.max_think_tokens) if cfg.max_think_tokens else None
    with autocast(engine.device, engine.dtype):
        return decode_batch(engine.model, prompts, [sampling] * len(prompts), generators, [budget] * len(prompts))


def score(seqs: list, problems: list[Problem], cfg: GRPOConfig,
          tok: SpongeTokenizer) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each reward of every completion (as decoded, the tags visible), and the right answers per group
    (the accuracy reward's, whatever the weights)."""
    G, texts = cfg.num_generations, [tok.decode(s.tokens, skip_special_tokens=True) for s in seqs]
    scores = {name: torch.tensor([REWARDS[name](t, problems[k // G]) for k, t in enumerate(texts)])
              for name in parse_reward_weights(cfg.reward_weights)}
    right = scores["accuracy"] if "accuracy" in scores else \
        torch.tensor([accuracy_reward(t, problems[k // G]) for k, t in enumerate(texts)])
    return scores, right.view(-1, G).sum(dim=1)


def group_advantages(rewards: torch.Tensor, scale: bool) -> torch.Tensor:
    """(prompts, G) rewards -> advantages: minus the group mean, divided by the group std if scale."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale:
        return centred
    return centred / (rewards.std(dim=1, keepdim=True) + 1e-4)


def training_rows(seqs: list, advantages: torch.Tensor, keep: torch.Tensor, pad_id: int) -> Batch:
    """Prompt + completion per row, exactly as the decoder saw them: its prompt (cut to the context
    when it was too long), the tokens chosen, and the stop token it sampled. Only the tokens the
    policy sampled are trained, and only in the rows kept (--dynamic_sampling drops groups whose
    correctness is all equal): the calculator's tokens and the budget's forced ones get no target."""
    rows = [(s.prompt, s.tokens + ([s.stop_id] if s.finish == "stop" else [])) for s in seqs]
    width = max(len(p) + len(c) for p, c in rows) - 1
    batch = {"input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
             "targets": torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long),
             "advantages": torch.zeros(len(rows), width)}
    for i, (p, c) in enumerate(rows):
        ids = torch.tensor(p + c)
        batch["input_ids"][i, :len(ids) - 1] = ids[:-1]
        if keep[i]:
            targets = ids[len(p):].clone()
            targets[seqs[i].tool_positions + seqs[i].forced_positions] = IGNORE_INDEX
            batch["targets"][i, len(p) - 1:len(ids) - 1] = targets
        batch["advantages"][i, len(p) - 1:len(ids) - 1] = advantages[i]
    batch["seq_lens"] = torch.tensor([len(p) + len(c) - 1 for p, c in rows])
    return batch


@torch.no_grad()
def old_logps(engine: Engine, rollout: Batch, temperature: float) -> torch.Tensor:
    """The sampling policy's log-probs of the rollout's targets, before any update on it."""
    with autocast(engine.device, engine.dtype):
        logits = engine.model(rollout["input_ids"].to(engine.device))
    return token_logps(logits.float() / temperature, rollout["targets"].to(engine.device)).float().cpu()


# ------------------------------------------------------------------ the loss
def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at every position, 0 where the target is ignored."""
    logp = -F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                            ignore_index=IGNORE_INDEX, reduction="none")
    return logp.view_as(targets)


def clipped_objective(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token -min(r A, clip(r) A) and whether the clipped branch was taken."""
    ratio = torch.exp(logp - old_logp)
    unclipped, clipped = ratio * advantages, ratio.clamp(1 - epsilon, 1 + epsilon) * advantages
    return -torch.minimum(unclipped, clipped), clipped < unclipped


@torch.no_grad()
def summed_entropy(logits: torch.Tensor, trained: torch.Tensor) -> torch.Tensor:
    """The policy's entropy (nats) summed over the trained tokens, a row at a time (the whole
    batch's fp32 softmax would be B x T x vocab). Falling entropy is the policy sharpening."""
    total = torch.zeros((), device=logits.device)
    for row, mask in zip(logits, trained):
        logp = row.float().log_softmax(-1)
        total += (-(logp.exp() * logp).sum(-1) * mask).sum()
    return total


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || ref) per token: exp(d) - d - 1 with d = ref - logp, always >= 0."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


class GRPOLoss(StageLoss):
    """The summed per-token GRPO loss of a batch of completions. Every log-probability is the
    sampling policy's: softmax(logits / temperature), the distribution the rollouts were drawn from."""

    def __init__(self, reference: Reference | None, beta: float, epsilon: float, temperature: float = 1.0):
        self.reference, self.beta, self.epsilon, self.temperature = reference, beta, epsilon, temperature
        self._sums: torch.Tensor | None = None  # summed kl, clipped tokens, entropy, tokens

    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        targets = batch["targets"]
        trained = (targets != IGNORE_INDEX).float()
        logits = logits.float() / self.temperature
        logp = token_logps(logits, targets)
        old = batch["old_logps"] if "old_logps" in batch else logp.detach()
        loss, clipped = clipped_objective(logp, old, batch["advantages"], self.epsilon)
        kl = torch.zeros_like(logp)
        if self.beta and self.reference is not None:
            with torch.no_grad():
                ref = token_logps(self.reference(batch).float() / self.temperature, targets)
            kl = k3_kl(logp, ref)
            loss = loss + self.beta * kl
        if torch.is_grad_enabled():
            step = torch.stack([(kl.detach() * trained).sum(), (clipped.float() * trained).sum(),
                                summed_entropy(logits.detach(), trained), trained.sum()])
            self._sums = step if self._sums is None else self._sums + step
        return (loss * trained).sum()

    def read_metrics(self, reduce: Reduce) -> dict[str, float]:
        if self._sums is None:
            return {}
        kl, clipped, entropy, tokens = reduce(self._sums).tolist()
        self._sums = None
        per_token = {"clip_fraction": clipped, "entropy": entropy} | ({"kl": kl} if self.beta else {})
        return {k: v / max(tokens, 1.0) for k, v in per_token.items()}


if __name__ == "__main__":
    train_stage("grpo", __doc__, REFERENCE, DEMO, build_data, train, build_loss, GRPOConfig)
