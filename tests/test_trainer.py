"""The engine: accumulation scaling, exact resume, schedule, config errors."""
import json
import math

import pytest
import torch

from engine_run import Run
from model import SpongeBob, get_preset, token_loss
from synthetic_data import SyntheticRows
from trainer import ConfigError, StageLoss, TrainingError, parse_config
from trainer.optim import lr_at


def make_trainer(tmp_path, data, val=None, model=None, **overrides):
    values = dict(out_dir=str(tmp_path), preset="spongebob-tiny", epochs=2, batch_size=4, accumulation_steps=1,
                  learning_rate=1e-2, min_lr=1e-3, warmup_steps=2, log_interval=1, eval_interval=0,
                  save_interval=1000, device="cpu", dtype="float32")
    values.update(overrides)
    cfg = parse_config([], "test", stage_defaults=values)
    if model is None:
        torch.manual_seed(0)
        model = SpongeBob(get_preset("spongebob-tiny"))
    return Run(cfg, model, data, val)


class Loss(StageLoss):
    """A test's own loss function as a stage's loss."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, logits, batch):
        return self.fn(logits, batch)


def weights(run):
    return {k: v.clone() for k, v in run.engine.model.state_dict().items()}


def assert_same_weights(a, b, atol):
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), f"{k}: max diff {(a[k] - b[k]).abs().max()}"


def run_capturing_grads(run):
    """fit(), recording the accumulated gradient handed to each optimizer update."""
    grads, step = [], run.engine.optimizers[0].step

    def capture(*args, **kwargs):
        grads.append(torch.cat([p.grad.flatten() for p in run.engine.model.parameters()]).clone())
        return step(*args, **kwargs)

    run.engine.optimizers[0].step = capture
    run.fit()
    return grads


@pytest.mark.parametrize("with_weights", [False, True])
def test_accumulation_gives_the_same_update_as_one_big_batch(tmp_path, with_weights):
    # Rows have different numbers of trained tokens, so averaging each
    # micro-batch's loss and dividing by N (the reference way) would differ.
    grads, final = [], []
    for batch_size, accum in [(4, 1), (2, 2), (1, 4)]:
        data = SyntheticRows(n_rows=12, weights=with_weights)
        t = make_trainer(tmp_path / f"{batch_size}x{accum}", data, batch_size=batch_size,
                         accumulation_steps=accum, epochs=1, learning_rate=1e-3, grad_clip=0)
        assert t.engine.total_steps == 3
        grads.append(run_capturing_grads(t))
        final.append(weights(t))
    for other in (1, 2):
        for g_big, g_acc in zip(grads[0], grads[other]):
            # Same gradient up to float summation order (the naive way is off by > 2%, below).
            assert ((g_acc - g_big).norm() / g_big.norm()).item() < 1e-5
        # Adam divides by sqrt(v), which magnifies float noise on near-zero
        # gradients; the weights agree to 0.5% of one step's size (lr 1e-3).
        assert_same_weights(final[0], final[other], atol=5e-6)


def test_per_micro_batch_averaging_would_fail_that_test(tmp_path):
    """The reference normalisation (each micro-batch's mean loss, divided by N)
    gives a clearly different gradient on the same rows, so the test above can fail."""
    big = make_trainer(tmp_path / "big", SyntheticRows(n_rows=8), batch_size=8, epochs=1, grad_clip=0)
    g_big = run_capturing_grads(big)[0]
    # The engine divides each micro-batch's loss by the step's trained-token
    # total; multiplying that back in leaves mean-per-micro-batch / N.
    total = float((SyntheticRows(n_rows=8).targets != -100).sum())
    naive = make_trainer(tmp_path / "naive", SyntheticRows(n_rows=8), batch_size=2, accumulation_steps=4,
                         epochs=1, grad_clip=0)
    naive.loss_fn = Loss(lambda logits, batch: token_loss(logits, batch["targets"]) / 4 * total)
    g_naive = run_capturing_grads(naive)[0]
    relative = ((g_naive - g_big).norm() / g_big.norm()).item()
    assert relative > 0.02, relative


class Crash(Exception):
    pass


class CrashingRows(SyntheticRows):
    """Dies when asked for a given micro-batch, like a kill in the middle of a run."""

    def __init__(self, crash_at_batch, **kw):
        super().__init__(**kw)
        self.crash_at_batch, self.served = crash_at_batch, 0

    def batches(self, batch_size, epoch, start=0):
        for batch in super().batches(batch_size, epoch, start):
            self.served += 1
            if self.served == self.crash_at_batch:
                raise Crash
            yield batch


def test_resume_after_a_crash_is_bit_identical(tmp_path):
    common = dict(batch_size=2, accumulation_steps=2, epochs=3, save_interval=2, keep_last=2)
    full = make_trainer(tmp_path / "full", SyntheticRows(n_rows=10), **common)
    full.fit()  # 10 rows -> 5 micro-batches -> 3 steps/epoch, 9 steps

    crashing = make_trainer(tmp_path / "cut", CrashingRows(crash_at_batch=10, n_rows=10), **common)
    with pytest.raises(Crash):
        crashing.fit()
    assert crashing.engine.step == 5  # died inside step 6 (epoch 1); the last state is step 4

    torch.manual_seed(1234)  # a different global RNG must not matter: resume restores it
    resumed = make_trainer(tmp_path / "cut", SyntheticRows(n_rows=10), model=SpongeBob(get_preset("spongebob-tiny")),
                           resume=True, **common)
    assert resumed.engine.step == 4
    resumed.fit()
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [p.name for p in sorted((tmp_path / "cut" / "test" / "state").iterdir())] == \
        ["step_00000008.pt", "step_00000009.pt"]


def test_resume_with_changed_settings_is_refused(tmp_path):
    make_trainer(tmp_path, SyntheticRows(), save_interval=1, max_steps=2).fit()
    with pytest.raises(ValueError, match=r"a step was 4 rows \(--batch_size 4 x --accumulation_steps 1 x 1 "
                                         r"process\(es\)\) but would be 2 now"):
        make_trainer(tmp_path, SyntheticRows(), save_interval=1, max_steps=2, batch_size=2, resume=True)


def test_resume_without_state_says_so(tmp_path):
    with pytest.raises(ValueError, match="--resume: no saved training state in"):
        make_trainer(tmp_path, SyntheticRows(), resume=True)


def test_nonfinite_loss_stops_with_step_lr_and_checkpoint(tmp_path):
    t = make_trainer(tmp_path, SyntheticRows())
    t.loss_fn = Loss(lambda logits, batch: logits.float().sum() * float("nan"))
    with pytest.raises(TrainingError, match=r"loss is nan at step 1 \(lr 0.005\); last good checkpoint: none"):
        t.fit()


def test_skip_nonfinite_counts_and_goes_on(tmp_path):
    t = make_trainer(tmp_path, SyntheticRows(), skip_nonfinite=True, max_steps=3)
    before = weights(t)
    t.loss_fn = Loss(lambda logits, batch: logits.float().sum() * float("inf"))
    t.fit()
    assert t.engine.skipped_nonfinite == 3 and t.engine.step == 3
    assert_same_weights(before, weights(t), atol=0)


def test_lr_warms_up_to_exactly_the_peak_then_decays_to_min():
    lrs = [lr_at(s, total_steps=12, peak_lr=1.0, min_lr=0.1, warmup_steps=4) for s in range(12)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and max(lrs) == 1.0  # never above the peak (the reference started at 1.1x)
    assert math.isclose(lrs[-1], 0.1)
    # Cosine midpoint: halfway through the decay (step 4 + 3.5) the lr is (peak + min) / 2.
    assert math.isclose(lr_at(7, 12, 1.0, 0.1, 4) + lr_at(8, 12, 1.0, 0.1, 4), 1.1, rel_tol=1e-9)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))


def test_unknown_flag_and_config_key_suggest_the_closest(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_config(["--learning_rat", "1e-3"], "test")
    assert capsys.readouterr().err == "error: unknown option --learning_rat (did you mean --learning_rate?)\n"
    bad = tmp_path / "c.yaml"
    bad.write_text("batch_sise: 8\n")
    with pytest.raises(ConfigError, match="unknown key 'batch_sise' \\(did you mean 'batch_size'\\?\\)"):
        parse_config(["--config", str(bad)], "test")


def test_flags_beat_the_config_file_which_beats_defaults(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("batch_size: 8\nlearning_rate: 0.001\nuse_wandb: true\nsave_at_epochs: 0.5,1.5\n")
    cfg = parse_config(["--config", str(f), "--batch_size", "16", "--use_wandb", "false"], "test",
                       stage_defaults={"batch_size": 84, "epochs": 7})
    assert (cfg.batch_size, cfg.learning_rate, cfg.use_wandb, cfg.epochs) == (16, 0.001, False, 7)
    assert cfg.save_at_epochs == [0.5, 1.5]


def test_demo_defaults_apply_only_without_data():
    demo = {"batch_size": 8, "preset": "spongebob-tiny"}
    assert parse_config([], "t", {"batch_size": 84}, demo).batch_size == 8
    assert parse_config(["--batch_size", "3"], "t", {"batch_size": 84}, demo).batch_size == 3
    real = parse_config(["--data_path", "x.jsonl"], "t", {"batch_size": 84}, demo)
    assert (real.batch_size, real.preset) == (84, "spongebob-29m")


def test_metrics_rows_and_milestones(tmp_path):
    import json
    t = make_trainer(tmp_path, SyntheticRows(n_rows=8), val=SyntheticRows(n_rows=4, seed=9), batch_size=2,
                     epochs=2, eval_interval=2, save_at_epochs=[0.5, 1.5])
    t.fit()
    rows = [json.loads(line) for line in (tmp_path / "test" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert {"step", "epoch", "loss", "lr", "tokens", "tokens_per_s", "grad_norm"} <= set(rows[0])
    assert [r["step"] for r in rows if "val_loss" in r] == [2, 4, 6, 8]
    assert rows[-1]["tokens"] == 8 * 2 * 16  # steps x rows x tokens per row
    assert sorted(p.name for p in (tmp_path / "test" / "milestones").iterdir()) == \
        ["test_epoch0.5.pth", "test_epoch1.5.pth"]
    assert (tmp_path / "test.pth").is_file()


def test_validation_time_is_not_counted_as_training_throughput(tmp_path):
    import time

    class SlowValidation(SyntheticRows):
        def batches(self, batch_size, epoch, start=0):
            time.sleep(0.5)
            yield from super().batches(batch_size, epoch, start)
    t = make_trainer(tmp_path, SyntheticRows(), val=SlowValidation(n_rows=4), max_steps=3, eval_interval=1,
                     log_interval=1)
    t.fit()
    rows = [json.loads(line) for line in (tmp_path / "test" / "metrics.jsonl").read_text().splitlines()]
    tokens_per_step = rows[0]["tokens"]
    # Each step of the tiny model takes milliseconds; had the 0.5 s validation after step 1 been
    # counted in step 2's interval, step 2 would show fewer than 2 steps' tokens a second.
    assert rows[1]["tokens_per_s"] > 4 * tokens_per_step


def test_validation_does_no_backward_work(tmp_path):
    """A validation pass costs one forward: 2 FLOPs per matmul parameter per token (the embedding is
    a lookup). The chunked training loss did its backward matmuls in the forward, validation too."""
    from torch.utils.flop_counter import FlopCounterMode
    from trainer.loop import CrossEntropy, validation_loss
    val = SyntheticRows(n_rows=8)
    t = make_trainer(tmp_path, SyntheticRows(), val=val, batch_size=4, eval_batches=2)
    matmul_params = sum(m.weight.numel() for m in t.engine.model.modules() if isinstance(m, torch.nn.Linear))
    with FlopCounterMode(display=False) as counter:
        validation_loss(t.engine, val, CrossEntropy())
    tokens = 8 * 16  # both batches of 4 rows of 16 (SDPA's own FLOPs are not counted on a CPU)
    assert counter.get_total_flops() == 2 * matmul_params * tokens


def test_wsd_holds_the_peak_then_decays_linearly_to_min_by_hand():
    # 10 steps, warmup 2, the last 30% decay: steps 7, 8, 9 (the lr reaches min_lr at the last step).
    lrs = [lr_at(s, 10, 1.0, 0.1, 2, "wsd", 0.3) for s in range(10)]
    assert lrs[:7] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert lrs[7:] == pytest.approx([1.0 - 0.9 / 3, 1.0 - 1.8 / 3, 0.1])


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    from trainer.optim import make_optimizers
    model = SpongeBob(get_preset("spongebob-tiny"))
    muon, adamw = make_optimizers(model, parse_config(["--optimizer", "muon"], "t"))
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in in_muon}
    assert names == {n for n, p in model.named_parameters() if n.startswith("layers.") and p.dim() == 2}
    assert len(names) == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers
    rest = {n for n, p in model.named_parameters() if id(p) not in in_muon}
    assert rest == {"embed.weight", "lm_head.weight", "norm.weight"} | {
        f"layers.{i}.{norm}.weight" for i in range(2) for norm in ("attn_norm", "mlp_norm")}
    assert [type(o).__name__ for o in make_optimizers(model, parse_config([], "t"))] == ["AdamW"]


def test_muon_leaves_lora_adapters_to_adamw():
    from model.lora import apply_lora
    from trainer.optim import make_optimizers
    model = SpongeBob(get_preset("spongebob-tiny"))
    apply_lora(model, 4, 8.0, 0.0, ("q_proj", "v_proj"))
    optimizers = make_optimizers(model, parse_config(["--optimizer", "muon"], "t"))
    assert [type(o).__name__ for o in optimizers] == ["AdamW"]
    assert sum(p.numel() for g in optimizers[0].param_groups for p in g["params"]) == sum(
        p.numel() for n, p in model.named_parameters() if "lora_" in n) == 2 * (4 * 64 + 64 * 4 + 4 * 64 + 32 * 4)


@pytest.mark.parametrize("optimizer,schedule", [("muon", "cosine"), ("muon", "wsd"), ("adamw", "wsd")])
def test_muon_and_wsd_resume_after_a_crash_bit_identically(tmp_path, optimizer, schedule):
    common = dict(batch_size=2, accumulation_steps=2, epochs=3, save_interval=2, keep_last=2, optimizer=optimizer,
                  lr_schedule=schedule, decay_fraction=0.3)
    full = make_trainer(tmp_path / "full", SyntheticRows(n_rows=10), **common)
    full.fit()
    crashing = make_trainer(tmp_path / "cut", CrashingRows(crash_at_batch=10, n_rows=10), **common)
    with pytest.raises(Crash):
        crashing.fit()
    resumed = make_trainer(tmp_path / "cut", SyntheticRows(n_rows=10), resume=True, **common)
    assert resumed.engine.step == 4
    resumed.fit()
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_longer_wsd_run_goes_on_from_its_stable_phase(tmp_path, capsys):
    """--resume --max_steps larger on a finished wsd run: it goes on from the state where its decay
    began, decays at the new end, and ends bit-identical to a run planned that long from the start."""
    common = dict(batch_size=4, epochs=5, save_interval=3, lr_schedule="wsd", decay_fraction=0.2, optimizer="muon")
    long = make_trainer(tmp_path / "long", SyntheticRows(), max_steps=20, **common)
    long.fit()
    short = make_trainer(tmp_path / "ext", SyntheticRows(), max_steps=10, **common)
    short.fit()  # decays over steps 8-10; its state at step 8 is kept
    assert (tmp_path / "ext" / "test" / "state" / "stable_step_00000008.pt").is_file()
    capsys.readouterr()
    extended = make_trainer(tmp_path / "ext", SyntheticRows(), max_steps=20, resume=True, **common)
    assert "going on from step 8, where its decay began (the decay now starts at step 16)" in capsys.readouterr().out
    assert extended.engine.step == 8
    extended.fit()
    a, b = weights(long), weights(extended)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_one_muon_step_by_hand():
    """Nesterov momentum, then Newton-Schulz, which maps each singular value s of G/|G| through the quintic
    a s + b s^3 + c s^5 five times (G = U S V^T, so X X^T X = U S^3 V^T); decoupled decay; RMS scaling."""
    import math
    from trainer.optim import Muon

    def ns(s: float) -> float:
        for _ in range(5):
            s = 3.4445 * s - 4.7750 * s ** 3 + 2.0315 * s ** 5
        return s
    p0 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    p = torch.nn.Parameter(p0.clone())
    opt = Muon([p], lr=0.1, weight_decay=0.5, momentum=0.9, dtype=torch.float32)
    p.grad = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # singular values 3 and 1, |G| = sqrt(10)
    opt.step()
    # momentum = 0.1 G; the Nesterov update G + 0.9 (0.1 G - G) = 0.19 G has G's singular vectors
    orth = torch.tensor([[ns(3 / math.sqrt(10)), 0.0, 0.0], [0.0, ns(1 / math.sqrt(10)), 0.0]])
    expected = p0 * (1 - 0.1 * 0.5) - 0.1 * 0.2 * math.sqrt(3) * orth
    assert torch.allclose(p.detach(), expected, atol=1e-5)
    assert torch.allclose(opt.state[p]["momentum"], 0.1 * p.grad)
    assert all(0.6 < s < 1.2 for s in (orth[0, 0], orth[1, 1]))  # both near 1 (3 and 1 before): all directions move alike
