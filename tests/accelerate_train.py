"""Train a tiny LANCER model for a few stage-2 steps, in one process or under `accelerate launch` (used by test_training.py).

    python tests/accelerate_train.py --init CKPT --output-dir OUT --batch-size 8 --steps 5
    accelerate launch --cpu --num_processes 2 ... tests/accelerate_train.py --init CKPT --output-dir OUT --batch-size 4 --steps 5

`--batch-size` is per process (global batch = batch size x processes). The model starts from the checkpoint `--init`
(written by `save_model` for `rule_dataset(n_users=--users)`), dropout off. The main process writes OUT/result.json:
the number of processes, the trainer state, and the loss of the final model on all training examples (eval mode).
"""
import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import nn


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--init", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--max-history", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)

    from accelerate import Accelerator
    from lancer.checkpoints import load_model
    from lancer.model import sequence_batch
    from lancer.protocol import leave_one_out, training_examples
    from lancer.training import TrainConfig, rule_dataset
    from lancer.trainer import train

    ds = rule_dataset(n_users=args.users)
    split = leave_one_out(ds, max_history=args.max_history)
    model = load_model(args.init, ds.items)
    for m in model.modules():
        if isinstance(m, nn.Dropout): m.p = 0.0
    cfg = TrainConfig(epochs_stage1=0, epochs_stage2=1, batch_size=args.batch_size, lr_stage2=5e-3, warmup_ratio=0.0,
                      max_steps=args.steps, num_beams=1, progress=False)
    accelerator = Accelerator(cpu=True)
    result = train(model, split, cfg, args.output_dir, accelerator)

    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model).eval()
        examples = training_examples(split)
        with torch.no_grad():
            batch = sequence_batch(model.texts, examples, model.config.max_history, model.pad_id)
            losses = {k: float(v) for k, v in model(**batch).items()}
        out = {"num_processes": accelerator.num_processes, "stopped_at": result.get("stopped_at"),
               "final_loss": losses["loss"], "final_losses": losses}
        Path(args.output_dir, "result.json").write_text(json.dumps(out, indent=2))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
