"""When torch.compile is used (common/device.py): never on GPUs older than Triton's minimum (inductor
would crash at the first step), and dynamo giving up after its recompile limit is said in one line."""
import sys
import types

import pytest
import torch
import torch._dynamo

import common.device as device_module
from common.device import pick_compile, warn_on_recompile_limit


def fake_gpu(monkeypatch, capability, name):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setitem(sys.modules, "triton", types.ModuleType("triton"))  # Triton "installed"
    monkeypatch.setattr(device_module, "warn_on_recompile_limit", lambda: None)


def test_a_pascal_gpu_turns_the_default_compile_off_in_one_line(monkeypatch, capsys):
    fake_gpu(monkeypatch, (6, 1), "NVIDIA GeForce GTX 1080")
    assert pick_compile(None, torch.device("cuda")) is False
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "compile: off" in out and "6.1" in out and "7.0" in out
    with pytest.raises(ValueError, match=r"--compile true: .*compute capability 6\.1"):
        pick_compile(True, torch.device("cuda"))


@pytest.mark.parametrize("capability", [(7, 0), (7, 5), (8, 0), (9, 0)])
def test_volta_and_newer_compile_by_default(monkeypatch, capability):
    fake_gpu(monkeypatch, capability, "NVIDIA GPU")
    assert pick_compile(None, torch.device("cuda")) is True


def test_the_recompile_limit_is_said_once_in_one_line(monkeypatch, capsys):
    warn_on_recompile_limit()
    warn_on_recompile_limit()  # installing twice changes nothing
    monkeypatch.setattr(device_module._RecompileLimitLine, "said", False)
    torch._dynamo.reset()
    double = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
    with torch._dynamo.config.patch(recompile_limit=2):  # (monkeypatch's undo breaks dynamo's config module)
        for n in range(1, 6):
            assert torch.equal(double(torch.ones(n)), torch.full((n,), 2.0))  # past the limit: eager, still right
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hit its recompile_limit (2)" in err and "runs uncompiled" in err
    torch._dynamo.reset()
