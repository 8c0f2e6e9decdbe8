"""Precision and speed accounting: dtype choice per device, the non-finite guard under bf16,
MFU peaks by exact device name, and the FLOP formula, all on a CPU (GPUs are mocked)."""
import pytest
import torch

import common.device as device_module
from model import SpongeBob, get_preset
from synthetic_data import SyntheticRows
from test_trainer import make_trainer, weights
from trainer import TrainingError
from common.device import cpu_has_native_bf16, matmul_params, peak_flops, pick_dtype, step_flops


def test_auto_picks_bf16_only_on_cpus_that_have_it(monkeypatch):
    assert cpu_has_native_bf16({"avx2", "avx512f", "avx512_bf16"})
    assert cpu_has_native_bf16({"amx_bf16", "amx_tile"})
    assert cpu_has_native_bf16({"fp", "asimd", "bf16"})  # Arm's BF16 extension
    assert not cpu_has_native_bf16({"avx2", "avx512f", "fma"})
    monkeypatch.setattr(device_module, "cpu_flags", lambda: {"avx2"})
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    monkeypatch.setattr(device_module, "cpu_flags", lambda: {"avx512_bf16"})
    assert pick_dtype("auto", torch.device("cpu")) == torch.bfloat16


@pytest.mark.parametrize("capability,name,auto", [((8, 0), "NVIDIA A100-SXM4-80GB", torch.bfloat16),
                                                  ((9, 0), "NVIDIA H100 80GB HBM3", torch.bfloat16),
                                                  ((7, 5), "Tesla T4", torch.float16),
                                                  ((7, 0), "Tesla V100-SXM2-16GB", torch.float16)])
def test_gpus_get_bf16_from_ampere_on_and_fp16_before(monkeypatch, capability, name, auto):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    cuda = torch.device("cuda")
    assert pick_dtype("auto", cuda) == auto
    if auto == torch.float16:
        with pytest.raises(ValueError, match=rf"--dtype bfloat16: {name} \(compute capability 7.\d\) has no native bf16"):
            pick_dtype("bfloat16", cuda)


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                       ("NVIDIA H100 NVL", 835e12), ("NVIDIA H200", 989e12),
                                       ("NVIDIA H200 NVL", 835e12),
                                       ("NVIDIA A100-SXM4-40GB", 312e12), ("NVIDIA GeForce RTX 4090", 165.2e12),
                                       ("NVIDIA GeForce RTX 3090", 35.6e12), ("NVIDIA GeForce RTX 3090 Ti", 40e12),
                                       ("NVIDIA L40S", 362e12), ("NVIDIA L4", 121e12), ("NVIDIA L40", None),
                                       ("NVIDIA GeForce GTX 1080", None)])
def test_peak_flops_by_exact_device_name(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_flops(torch.device("cuda")) == (peak, name)


def test_the_flop_count_by_hand():
    model = SpongeBob(get_preset("spongebob-tiny"))  # vocab 6400, dim 64, 2 layers, untied
    n = matmul_params(model.num_parameters(), 6400, 64, tied=False)
    assert n == model.num_parameters() - 6400 * 64  # the embedding lookup is not a matmul
    assert matmul_params(1000, 10, 5, tied=True) == 1000  # tied: the table is also the head
    # Two sequences of 3 and 1 tokens: 4 tokens, 3*4/2 + 1 = 7 attended pairs.
    assert step_flops(100, 2, 8, tokens=4, attended_pairs=7) == 6 * 100 * 4 + 12 * 2 * 8 * 7


def inf_gradient_at(trainer, bad_steps):
    """Make the embedding's gradient inf on the given steps while the loss stays finite."""
    param = trainer.engine.model.embed.weight
    calls = {"n": 0}

    def hook(grad):
        calls["n"] += 1
        return grad * float("inf") if calls["n"] in bad_steps else grad

    param.register_hook(hook)


def test_an_inf_gradient_under_bf16_skips_one_update_and_never_poisons_the_weights(tmp_path):
    t = make_trainer(tmp_path, SyntheticRows(n_rows=8), batch_size=4, epochs=2, skip_nonfinite=True,
                     dtype="bfloat16", save_interval=1)
    inf_gradient_at(t, {2})
    snapshots = []
    step = t.engine.optimizers[0].step

    def record(*args, **kwargs):
        out = step(*args, **kwargs)
        snapshots.append(weights(t))
        return out

    t.engine.optimizers[0].step = record
    t.fit()
    assert t.engine.skipped_nonfinite == 1 and t.engine.step == 4
    assert all(torch.equal(snapshots[0][k], snapshots[1][k]) for k in snapshots[0])  # step 2 changed nothing
    assert not all(torch.equal(snapshots[1][k], snapshots[2][k]) for k in snapshots[1])  # step 3 trained again
    assert all(torch.isfinite(v).all() for v in weights(t).values())


def test_an_inf_gradient_stops_the_run_without_skip_nonfinite(tmp_path):
    t = make_trainer(tmp_path, SyntheticRows(n_rows=8), batch_size=4, epochs=2, dtype="bfloat16")
    inf_gradient_at(t, {1})
    with pytest.raises(TrainingError, match=r"gradient norm is (inf|nan) at step 1 \(lr 0.005\)"):
        t.fit()
    assert all(torch.isfinite(v).all() for v in weights(t).values())
