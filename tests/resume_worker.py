"""Train a tiny LANCER on the next-item rule, checkpointing after every optimizer step (used by test_faults.py, which
kills it at random moments and resumes it).

    python tests/resume_worker.py --init CKPT --output-dir OUT --preset text|items [--resume]

The model starts from the checkpoint `--init` (written by `save_model` for `rule_dataset(n_users=16)`, dropout on, so
that the random-number state matters). `items` is the item-token model with cached item representations (the knowledge
loss samples its items from a generator), `text` the paper's text model. Writes OUT/metrics.json at the end."""
import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch


def config(preset: str):
    from lancer.training import TrainConfig
    common = dict(epochs_stage1=1, epochs_stage2=2, batch_size=4, lr_stage1=5e-3, lr_stage2=5e-3, num_beams=2,
                  progress=False, save_every=1)
    if preset == "items":
        return TrainConfig(**common, windows_per_user=0, window_stride=4, item_reps="cached", refresh_every=3,
                           knowledge_items=2, valid_users=0)
    return TrainConfig(**common, windows_per_user=2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--init", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--preset", choices=("text", "items"), required=True)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    from lancer.checkpoints import load_model
    from lancer.protocol import leave_one_out
    from lancer.training import rule_dataset
    from lancer.resume import run_lock
    from lancer.trainer import train
    ds = rule_dataset(n_users=16)
    ds.name = "ml-100k"
    split = leave_one_out(ds, max_history=4)
    model = load_model(args.init, ds.items)
    with run_lock(args.output_dir):
        train(model, split, config(args.preset), args.output_dir, resume=args.resume)


if __name__ == "__main__":
    main()
