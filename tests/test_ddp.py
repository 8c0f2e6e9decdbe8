"""DDP on CPU (gloo): 2 processes x batch 2 give the same weights as 1 process x batch 4."""
import os
import socket

import torch
import torch.multiprocessing as mp

from engine_run import Run
from model import SpongeBob, get_preset, read_checkpoint
from synthetic_data import SyntheticRows
from trainer import parse_config
from trainer.distributed import init_distributed, shutdown
from trainer.loop import CrossEntropy

TOK = {"vocab_size": 6400}

SETTINGS = dict(preset="spongebob-tiny", epochs=2, accumulation_steps=2, learning_rate=1e-3, warmup_steps=1,
                save_interval=1000, device="cpu", dtype="float32", log_interval=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(out_dir, batch_size, rank=0, world_size=1, **overrides):
    cfg = parse_config([], "test", stage_defaults=dict(SETTINGS, out_dir=str(out_dir), batch_size=batch_size, **overrides))
    dist = init_distributed(torch.device("cpu"))
    assert dist.world_size == world_size and dist.rank == rank
    torch.manual_seed(0)  # every rank starts from the same weights (DDP also broadcasts rank 0's)
    model = SpongeBob(get_preset("spongebob-tiny"))
    data = SyntheticRows(n_rows=16, rank=rank, world_size=world_size)
    trainer = Run(cfg, model, data, tokenizer_id=TOK, dist=dist)
    trainer.fit()
    return trainer.engine.total_steps


def ddp_worker(rank, world_size, port, out_dir, optimizer="adamw"):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    try:
        train(out_dir, batch_size=2, rank=rank, world_size=world_size, optimizer=optimizer, embedding_lr_scale=1.0)
    finally:
        shutdown()


def test_two_cpu_processes_match_one_process_with_the_same_global_batch(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like each DDP worker, so both sides sum in the same order
    try:
        steps = train(tmp_path / "single", batch_size=4)
    finally:
        torch.set_num_threads(threads)
    assert steps == 4  # 16 rows / (4 x 2) per step x 2 epochs
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)

    assert_same_trained_weights(tmp_path, "embed.weight")
    # Only rank 0 writes: one metrics file with one row per step.
    rows = (tmp_path / "ddp" / "test" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 4


def test_two_ranks_with_muon_match_one_rank_with_twice_the_accumulation(tmp_path):
    """Muon orthogonalises each matrix's whole (all-reduced) gradient, so every rank makes the same update:
    2 gloo ranks x 2 rows x accumulation 2 give the weights of 1 rank x 2 rows x accumulation 4. The
    embedding's lr is Muon's here: at its default 10x, AdamW magnifies the all-reduce's other summation
    order in the embedding's rarely seen rows to 4e-6 after 4 steps (the matrices stay within 1e-6)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train(tmp_path / "single", batch_size=2, optimizer="muon", accumulation_steps=4,
                     embedding_lr_scale=1.0) == 4
    finally:
        torch.set_num_threads(threads)
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path / "ddp"), "muon"), nprocs=2, join=True)
    assert_same_trained_weights(tmp_path, "layers.0.attn.q_proj.weight")


def assert_same_trained_weights(tmp_path, moved: str) -> None:
    """The 1-rank run (single/) and the 2-rank run (ddp/) end within 1e-6, and `moved` did train."""
    single = read_checkpoint(tmp_path / "single" / "test.pth")["model"]
    ddp = read_checkpoint(tmp_path / "ddp" / "test.pth")["model"]
    for name in single:
        assert torch.allclose(single[name], ddp[name], atol=1e-6, rtol=0), name
    torch.manual_seed(0)
    initial = SpongeBob(get_preset("spongebob-tiny")).state_dict()
    assert not torch.allclose(single[moved], initial[moved], atol=1e-4)


def stop_worker(rank, world_size, port, out_dir):
    """Rank 1 alone gets Ctrl-C after step 1: every rank must stop at step 2, and rank 0 must save."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    cfg = parse_config([], "test", stage_defaults=dict(SETTINGS, out_dir=out_dir, batch_size=2, epochs=4))
    dist = init_distributed(torch.device("cpu"))
    torch.manual_seed(0)

    class CtrlCOnRank1(CrossEntropy):  # rank 1's Ctrl-C arrives during step 2 (its third micro-batch)
        calls = 0

        def __call__(self, logits, batch):
            CtrlCOnRank1.calls += 1
            if CtrlCOnRank1.calls == 3 and rank == 1:
                trainer.engine.interrupts.requested = True
            return super().__call__(logits, batch)
    trainer = Run(cfg, SpongeBob(get_preset("spongebob-tiny")), SyntheticRows(n_rows=16, rank=rank, world_size=2),
                  loss_fn=CtrlCOnRank1(), tokenizer_id=TOK, dist=dist)
    engine = trainer.engine
    try:
        trainer.fit()
        raise AssertionError("the run was not stopped")
    except KeyboardInterrupt as e:
        assert engine.step == 2, engine.step
        # Rank 0 says what it saved; the others say nothing (they used to say "saved None"),
        # yet every rank knows the state, which is on disk before any rank goes on.
        assert ("saved" in str(e)) == (rank == 0), str(e)
        assert engine.last_saved.endswith("step_00000002.pt") and os.path.isfile(engine.last_saved)
    finally:
        shutdown()


def test_ctrl_c_on_one_rank_stops_all_ranks_at_the_same_step_and_rank_0_saves(tmp_path):
    mp.spawn(stop_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    assert read_checkpoint(tmp_path / "test.pth")["meta"]["step"] == 2


def test_every_collective_runs_on_the_models_device(tmp_path, monkeypatch):
    """NCCL takes only CUDA tensors. On a CPU the same mistake is caught by making the default
    device 'meta' while the model and data sit on the CPU: a tensor made without device=...
    lands on meta, and the wrapper refuses it as NCCL would refuse a CPU tensor."""
    import trainer.engine
    cfg = parse_config([], "test", stage_defaults=dict(SETTINGS, out_dir=str(tmp_path), batch_size=2))
    torch.manual_seed(0)
    engine = Run(cfg, SpongeBob(get_preset("spongebob-tiny")), SyntheticRows(n_rows=8), tokenizer_id=TOK).engine
    seen = []

    def checked_all_reduce(tensor):
        seen.append(tensor.device)
        assert tensor.device == engine.device, f"collective on {tensor.device}, model on {engine.device}"
        return tensor

    monkeypatch.setattr(trainer.engine, "all_reduce_sum", checked_all_reduce)
    batch = next(iter(SyntheticRows(n_rows=8).batches(2, epoch=0)))
    with torch.device("meta"):  # one step, as trainer/loop.py's fit takes it
        engine.set_lr()
        batch = engine.to_device(batch)
        with engine.micro_batch(last=True):
            loss = CrossEntropy()(engine.forward(batch), batch)
        engine.backward(loss, batch)
        engine.update()
    assert seen == [torch.device("cpu")]


def test_a_two_process_run_resumes_on_one_process(tmp_path):
    """A preempted 2-process job comes back on 1 process: the same rows per step (2 x 2 -> 4 x 1),
    so it ends where an uninterrupted 1-process run of 4 rows per micro-step ends."""
    from trainer.checkpoints import RunPaths, latest_state
    from trainer.resume import elastic_batch
    mp.spawn(stop_worker, args=(2, free_port(), str(tmp_path / "cut")), nprocs=2, join=True)  # stops at step 2
    saved = latest_state(RunPaths(tmp_path / "cut", "test"), peek=True)
    assert (saved["world_size"], saved["step"]) == (2, 2)
    batch, accumulation = elastic_batch(saved["config"], saved["world_size"], 1)
    assert (batch, accumulation) == (4, 2)  # the rows of a micro-step, across processes, stay 4

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        values = dict(SETTINGS, batch_size=batch, accumulation_steps=accumulation, epochs=4)
        cfg = parse_config([], "test", stage_defaults=dict(values, out_dir=str(tmp_path / "cut"), resume=True))
        resumed = Run(cfg, SpongeBob(get_preset("spongebob-tiny")), SyntheticRows(n_rows=16), tokenizer_id=TOK)
        assert resumed.engine.step == 2
        resumed.fit()
        torch.manual_seed(0)
        cfg = parse_config([], "test", stage_defaults=dict(values, out_dir=str(tmp_path / "one")))
        whole = Run(cfg, SpongeBob(get_preset("spongebob-tiny")), SyntheticRows(n_rows=16), tokenizer_id=TOK)
        whole.fit()
    finally:
        torch.set_num_threads(threads)
    a, b = whole.engine.model.state_dict(), resumed.engine.model.state_dict()
    assert resumed.engine.step == whole.engine.step == 8
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=0), name
    # Rows per step that cannot stay the same are refused in one line with the numbers (the newest
    # state is now the 1-process one).
    cfg = parse_config([], "test", stage_defaults=dict(SETTINGS, batch_size=3, epochs=4,
                                                       out_dir=str(tmp_path / "cut"), resume=True))
    import pytest
    with pytest.raises(ValueError, match=r"a step was 8 rows \(--batch_size 4 x --accumulation_steps 2 x 1 process"
                                         r"\(es\)\) but would be 6 now; keep batch x accumulation x processes at 8"):
        Run(cfg, SpongeBob(get_preset("spongebob-tiny")), SyntheticRows(n_rows=16), tokenizer_id=TOK)


@__import__("pytest").mark.slow
def test_two_nodes_on_localhost_train_and_resume_on_one(tmp_path):
    """Multi-node as docs/training.md describes it: torchrun on each node with --nnodes 2, a
    rendezvous address, and one --out_dir both can reach; then the run goes on on one process."""
    import subprocess
    import sys
    from pathlib import Path
    from test_pretrain import write_corpus
    repo = Path(__file__).resolve().parents[1]
    data = write_corpus(tmp_path / "c.jsonl", n_docs=200)
    port = free_port()
    args = ["--data_path", str(data), "--preset", "spongebob-tiny", "--max_seq_len", "64", "--batch_size", "2",
            "--accumulation_steps", "2", "--max_steps", "4", "--save_interval", "2", "--warmup_steps", "1",
            "--eval_interval", "0", "--device", "cpu", "--out_dir", str(tmp_path / "shared")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo))
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                               "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", str(port),
                               str(repo / "pretrain.py"), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert "2 process(es)" in outputs[0][0]
    more = [sys.executable, str(repo / "pretrain.py"), *args, "--max_steps", "6", "--resume"]  # the last flag wins
    done = subprocess.run(more, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--resume on 1 process(es) (the run was saved on 2): --batch_size 4 x --accumulation_steps 2" in done.stdout
    assert read_checkpoint(tmp_path / "shared" / "pretrain.pth")["meta"]["step"] == 6


def fit_worker(rank, world_size, port, result_dir):
    """Rank 1 sees too little free memory for rank 0's plan: both must run rank 0's plan."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    import trainer.ops as run
    from trainer.memory import estimate_peak_bytes
    dist = init_distributed(torch.device("cpu"))
    try:
        model = SpongeBob(get_preset("spongebob-tiny"))
        need = estimate_peak_bytes(model.config, model.num_parameters(), 64, 512, torch.float32)
        run.available_bytes = lambda device, ranks: need / 0.85 * (2 if rank == 0 else 0.9)
        cfg = parse_config([], "test", stage_defaults=dict(SETTINGS, batch_size=64, max_seq_len=512))
        run.fit_memory(cfg, model, torch.device("cpu"), torch.float32, dist)
        with open(os.path.join(result_dir, f"rank{rank}.txt"), "w") as f:
            f.write(f"{cfg.batch_size} {cfg.accumulation_steps}")
    finally:
        shutdown()


def test_rank_0_decides_the_memory_fit_for_every_rank(tmp_path):
    mp.spawn(fit_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    plans = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert plans == ["64 2", "64 2"]  # rank 1 alone would have cut its micro-batch
