"""Stage 1, pretraining: learn to continue text, from a freshly initialised model.

    python pretrain.py                                    # built-in demo corpus, a few minutes on a 2-core CPU
    python pretrain.py --data_path data/pretrain_hq.jsonl # your data; defaults follow the seed run
    torchrun --nproc_per_node 4 pretrain.py --data_path data/pretrain_hq.jsonl

What is special about this stage, and nothing else (the loop, precision,
accumulation, checkpoints, resume and DDP live in trainer/):
  data   plain text, tokenized once into uint16 files (dataset/pretokenize.py)
         and packed back to back into rows with no padding (PretrainDataset);
  loss   next-token cross-entropy on every position;
  start  a new model from --preset; the weights go to out/pretrain.pth.
"""
from dataset.demo import ensure_demo_corpus
from dataset.pretokenize import describe, pretokenize
from dataset.pretrain_dataset import PretrainDataset
from tokenizer import SpongeTokenizer
from common.stages import stage
from trainer import StageData, TrainConfig, train_stage
from trainer.loop import fit
from trainer.distributed import DistInfo

# The seed's reference run: one 24 GB GPU, ~80 min per epoch on MiniMind's pretrain_hq.jsonl.
# Muon on the blocks' matrices and warmup-stable-decay: on held-out real text it reached the final
# loss of MiniMind's recipe (--optimizer adamw --lr_schedule cosine --learning_rate 5e-4 --min_lr 5e-5)
# in 0.28 of the tokens at this size (python -m bench.bench_optim, bench/RESULTS.md).
LR29M = 2e-3
REFERENCE = dict(preset="spongebob-29m", epochs=2, batch_size=84, accumulation_steps=2, optimizer="muon",
                 lr_schedule="wsd", learning_rate=LR29M, min_lr=LR29M / 10, warmup_steps=100, max_seq_len=512,
                 save_interval=1000, eval_interval=500)

# The demo (no --data_path): a 6M-parameter model and short rows, so that one
# pass over the built-in corpus takes a few minutes on 2 CPU cores with a
# clearly falling loss. Any of these can still be set on the command line.
DEMO = dict(preset="spongebob-demo", epochs=1, batch_size=16, accumulation_steps=1, learning_rate=4e-3,
            min_lr=4e-4, warmup_steps=20, max_seq_len=256, save_interval=100, eval_interval=50,
            log_interval=5, eval_batches=10)

# On a CPU without native bf16 (AVX2-only x86) training runs in fp32, about 1.6x slower per
# step here: the demo takes fewer steps there, so the README's main job stays within its
# minutes on both kinds of CPU (docs/own_data.md has the figures). --max_steps 0 runs the full demo.
FP32_CPU_DEMO = dict(max_steps=130, warmup_steps=15)

REAL_DATA_HINT = """To train on real data, for example MiniMind's pretrain_hq.jsonl ({"text": ...} per line):
    python pretrain.py --data_path path/to/pretrain_hq.jsonl                 # one GPU
    torchrun --nproc_per_node N pretrain.py --data_path path/to/pretrain_hq.jsonl"""


def build_data(cfg: TrainConfig, tok: SpongeTokenizer, dist: DistInfo) -> StageData:
    paths = cfg.data_path
    if not paths:
        paths = [str(ensure_demo_corpus(stage("pretrain").demo))]
        if dist.is_main:
            print(f"no --data_path: training on the built-in demo corpus {paths[0]} "
                  f"(preset {cfg.preset}, {cfg.epochs} epoch(s) of rows of {cfg.max_seq_len} tokens)")
            if cfg.max_steps == FP32_CPU_DEMO["max_steps"]:
                print(f"this CPU has no native bf16, so it trains in fp32: the demo stops after "
                      f"{cfg.max_steps} steps to keep its minutes (--max_steps 0 runs the whole epoch)")
            print(REAL_DATA_HINT)
    corpus = pretokenize(paths, tok, val_fraction=cfg.val_fraction, text_field=cfg.text_field or None,
                         skip_bad=cfg.skip_bad, seed=cfg.seed, show_progress=dist.is_main)
    shard = dict(seed=cfg.seed, rank=dist.rank, world_size=dist.world_size)
    train = PretrainDataset(corpus.train, cfg.max_seq_len, **shard)
    val = PretrainDataset(corpus.val, cfg.max_seq_len, shuffle=False, **shard)
    return StageData(train, val, identity=corpus.dir.name, description=describe(corpus))


if __name__ == "__main__":
    train_stage("pretrain", __doc__, REFERENCE, DEMO, build_data, fit, fp32_cpu_demo=FP32_CPU_DEMO)
