"""The memory a CPU run may use under cgroups (trainer/memory.py): the limit of the process's own
cgroup, nested below the mount root as under Slurm or systemd-run, and the tightest level above it."""
from pathlib import Path

from trainer.memory import _cgroup_free

GB = 1 << 30


def level(root: Path, rel: str, limit: str, usage: int, v1: bool = False) -> None:
    d = root / rel if rel else root
    d.mkdir(parents=True, exist_ok=True)
    (d / ("memory.limit_in_bytes" if v1 else "memory.max")).write_text(f"{limit}\n")
    (d / ("memory.usage_in_bytes" if v1 else "memory.current")).write_text(f"{usage}\n")


def test_v2_reads_the_own_nested_cgroup_and_takes_the_tightest_level(tmp_path):
    proc, mount = tmp_path / "cgroup", tmp_path / "sys"
    proc.write_text("0::/system.slice/slurmstepd.scope/job_7/step_0\n")
    level(mount, "", "max", 50 * GB)
    level(mount, "system.slice/slurmstepd.scope/job_7", str(8 * GB), 3 * GB)   # the job's limit: 5 GB left
    level(mount, "system.slice/slurmstepd.scope/job_7/step_0", "max", 3 * GB)   # the step: unlimited
    assert _cgroup_free(proc, mount) == 5 * GB
    level(mount, "system.slice", str(20 * GB), 18 * GB)  # a tighter parent: 2 GB left
    assert _cgroup_free(proc, mount) == 2 * GB


def test_v1_reads_the_memory_controllers_line(tmp_path):
    proc, mount = tmp_path / "cgroup", tmp_path / "sys"
    proc.write_text("5:cpu,cpuacct:/slurm/uid_1/job_9\n4:memory:/slurm/uid_1/job_9\n0::/\n")
    level(mount / "memory", "", "9223372036854771712", GB, v1=True)  # "unlimited" on v1
    level(mount / "memory", "slurm/uid_1/job_9", str(4 * GB), GB, v1=True)
    assert _cgroup_free(proc, mount) == 3 * GB


def test_unlimited_or_invisible_cgroups_give_none(tmp_path):
    proc, mount = tmp_path / "cgroup", tmp_path / "sys"
    proc.write_text("0::/user.slice/session-3.scope\n")
    level(mount, "", "max", GB)
    assert _cgroup_free(proc, mount) is None                 # its own level is not in the mount: the root's
    level(mount, "", str(6 * GB), GB)
    assert _cgroup_free(proc, mount) == 5 * GB               # ... limit still applies
    assert _cgroup_free(tmp_path / "no_proc", tmp_path / "no_sys") is None
