"""Does bf16 keep LANCER's accuracy? The configuration LANCER's selection chose (history cap 10) trained again under
bf16 autocast (`mixed_precision="bf16"`, everything else as chosen) with the seeds its fp32 test used, and the per-user
test NDCG@10 compared with those fp32 tests (paired over users and seeds, 95% bootstrap interval).

Each seed's run is kept in `runs/bf16-parity/seed<k>` and skipped when its metrics exist, so the script continues
where it stopped; the report records each run's wall time and threads:

    OMP_NUM_THREADS=1 python lab/bf16_parity.py --seeds 0 1 2 --output results/premise/bf16-parity.json
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from lancer.checkpoints import model_kwargs
from lancer.download import write_atomic
from lancer.metrics import compare_models, ndcg_at_k
from lancer.pipeline import train_lancer
from lancer.selection import chosen_config
from lancer.training import TrainConfig


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--selection", default="results/selection/ml-100k/cap10/lancer", help="LANCER's selection folder")
    p.add_argument("--runs-dir", default="runs/bf16-parity")
    p.add_argument("--output", default="results/premise/bf16-parity.json")
    args = p.parse_args()
    where = Path(args.selection)
    record, tested = (json.loads((where / f).read_text()) for f in ("selection.json", "test.json"))
    config = chosen_config(record)
    runs = {}
    for seed in args.seeds:
        run_dir = Path(args.runs_dir) / f"seed{seed}"
        if not (run_dir / "metrics.json").exists():
            t0 = time.time()
            train = TrainConfig(**config["train"] | {"seed": seed, "progress": False, "mixed_precision": "bf16"})
            train_lancer("ml-100k", run_dir, "offline", **model_kwargs(config["model"] | {"max_history": 10}),
                         train_config=train)
            (run_dir / "timing.json").write_text(json.dumps({"wall_time_s": round(time.time() - t0, 1),
                                                             "threads": torch.get_num_threads()}))
        runs[seed] = json.loads((run_dir / "metrics.json").read_text())
    per_user = {"fp32": np.stack([ndcg_at_k(np.asarray(tested["seeds"][str(s)]["ranks"]), 10) for s in args.seeds]),
                "bf16": np.stack([ndcg_at_k(np.asarray(runs[s]["test_ranks"]), 10) for s in args.seeds])}
    table = compare_models(per_user, "fp32")
    report = {"command": "python lab/bf16_parity.py --seeds " + " ".join(map(str, args.seeds)),
              "candidate": record["chosen"], "seeds": args.seeds,
              "ndcg@10": {name: table.loc[name, ["mean", "std", "ci_low", "ci_high"]].round(4).to_dict() for name in per_user},
              "bf16 - fp32": table.loc["bf16", ["diff", "diff_low", "diff_high", "verdict"]].to_dict(),
              "runs": {str(s): {"test_ndcg@10": runs[s]["lancer"]["ndcg@10"],
                                **json.loads((Path(args.runs_dir) / f"seed{s}" / "timing.json").read_text())}
                       for s in args.seeds}}
    print(json.dumps(report, indent=2))
    write_atomic(args.output, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
