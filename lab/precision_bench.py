"""fp32 against bf16: one LANCER training step on the offline backbone and on a pretrained LM, timed beside the CPU's
matmul peaks measured in the same run.

The step is the main job's (item tokens, every position a label, exact knowledge pass over the batch's unique history
items, forward + backward + optimizer) on a fixed batch of ML-100K training windows, in fp32 and under
`torch.autocast(dtype=torch.bfloat16)` (what `--mixed-precision bf16` does through Accelerate), each with the attention
kernels `lancer.training.attention_kernels` picks and with AdamW as a loop over tensors (`--optim adamw_torch`, the
default) or fused (`adamw_torch_fused`). The report records `GLIBC_TUNABLES`: glibc's allocator returns large blocks
to the system after each use unless told otherwise, and a step then spends much of its time faulting fresh pages in:

    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=2147483647:glibc.malloc.trim_threshold=4294967296 python lab/precision_bench.py ...

FLOPs are counted by
torch's `FlopCounterMode` on one step; GFLOP/s = FLOPs / median step time, and the fraction is against the 2048^2
matmul peak of the same precision. Run it on an otherwise idle machine (it reports the threads it used):

    python lab/precision_bench.py --backbones offline smollm2-135m --output results/premise/precision-bench.json
    python lab/precision_bench.py --backbones offline --steps 2 --output /tmp/bench.json     # a quick check

The pretrained backbones need `pip install 'lancer[pretrained]'`.
"""
import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from lancer.offline_backbone import OfflineBackboneConfig
from lancer.download import write_atomic
from lancer.model import sequence_batch
from lancer.pipeline import build_model, prepare_data, preset
from lancer.protocol import training_examples
from lancer.training import TrainConfig, attention_kernels


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    "GFLOP/s of an `n` x `n` matmul in `dtype` (best of `repeats`)."
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b                                                                  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter(); fn(); return time.perf_counter() - t0


def step_timing(model, batch: dict, bf16: bool, optim: str, steps: int) -> dict:
    "Median seconds of a training step, and the step's FLOPs (counted once)."
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5,
                            fused=optim == "adamw_torch_fused" or None)
    cfg = TrainConfig(mixed_precision="bf16" if bf16 else "no")
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), attention_kernels(cfg, torch.device("cpu")):
            loss = model(**batch)["loss"]
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    step()                                                                 # warm-up (allocations, kernels)
    with FlopCounterMode(display=False) as counter: step()
    times = [_timed(step) for _ in range(steps)]
    return {"step_s": round(statistics.median(times), 3), "gflop": round(counter.get_total_flops() / 1e9, 2)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["offline", "smollm2-135m"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=5, help="timed steps per backbone and precision (median reported)")
    p.add_argument("--output", default="results/premise/precision-bench.json")
    args = p.parse_args()
    torch.manual_seed(0)
    ds, split = prepare_data("ml-100k")
    config, head, train_config = preset("item-tokens", 0)
    examples = training_examples(split)[:args.batch_size]
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    report = {"command": "python lab/precision_bench.py " + " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                                                                  for k, v in vars(args).items()),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"), "cpu": platform.processor() or platform.machine(),
              "matmul_peak_gflops": {k: round(v, 1) for k, v in peaks.items()}, "rows": []}
    for name in args.backbones:
        model = build_model(ds, name, config, OfflineBackboneConfig(), split=split, seed=0, head=head)
        model.set_stage(2)
        batch = sequence_batch(model.texts, examples, config.max_history, model.pad_id, head)
        for precision, optim in [(p, o) for p in ("fp32", "bf16") for o in ("adamw_torch", "adamw_torch_fused")]:
            row = step_timing(model, batch, precision == "bf16", optim, args.steps)
            gflops = row["gflop"] / row["step_s"]
            report["rows"].append({"backbone": name, "precision": precision, "optim": optim,
                                   "parameters": sum(q.numel() for q in model.lm.parameters()), **row,
                                   "gflops": round(gflops, 1), "of_peak": round(gflops / peaks[precision], 3)})
            print(report["rows"][-1], flush=True)
        del model
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.output, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
