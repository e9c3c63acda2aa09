"""Behaviour kept through a refactor: tiny LANCER models trained before and after it must agree bit for bit.

Six variants of the model (the paper's text head, the published loss and item representation, item tokens with label
smoothing, item tokens written after the text with shared reasoning keys/values, a frozen knowledge prompt with LM
dropout, no reasoning prompt) train on the rule data set (24 users, 2 epochs, one thread); the script prints, for each,
the hash of its step losses, its validation NDCG@10 per epoch and its test metrics. Run it in a worktree of the commit
before and of the commit after, and compare the two outputs:

    git worktree add /tmp/before <commit>
    (cd /tmp/before && OMP_NUM_THREADS=1 PYTHONPATH=/tmp/before python /path/to/lab/redesign_identity.py) > before.json
    OMP_NUM_THREADS=1 python lab/redesign_identity.py > after.json && cmp before.json after.json

It speaks both ways of configuring a model: flat `LancerConfig` fields (before the heads, e9cc2b5^) and the options that
`lancer.checkpoints.model_parts` reads (since). About 4 minutes on one core.
"""
import hashlib
import json
import tempfile

import torch

try: from lancer.offline_backbone import OfflineBackboneConfig   # since the offline backbone has a notebook (04a)
except ImportError: from lancer.backbone import OfflineBackboneConfig
from lancer.model import LancerConfig
from lancer.pipeline import build_model
from lancer.protocol import leave_one_out
from lancer.training import TrainConfig, rule_dataset

try: from lancer.trainer import train                     # since the loop has a notebook of its own (11a, now 11b)
except ImportError: from lancer.training import train     # before

TINY = OfflineBackboneConfig(n_layer=2, n_embd=32, n_head=2, vocab_size=400, epochs=3, batch_size=16)
CASES = {
    "text": dict(n_prefix=4, max_history=4, attn_heads=2),
    "text-all-published": dict(n_prefix=4, max_history=4, attn_heads=2, loss_on="all", item_repr="published"),
    "items": dict(n_prefix=4, max_history=4, attn_heads=2, item_tokens="instead", loss_on="all", label_smoothing=0.1),
    "items-after-sharedkv": dict(n_prefix=4, max_history=4, attn_heads=2, item_tokens="after", shared_kv=True),
    "items-frozen": dict(n_prefix=4, max_history=4, attn_heads=2, item_tokens="instead", freeze_knowledge_prompt=True,
                         lm_dropout=0.2, item_encoder="knowledge"),
    "text-noreason": dict(n_prefix=4, max_history=4, attn_heads=2, reasoning_prompt=False, knowledge_weight=0.5),
}


def make(ds, options: dict, cache: str):
    "A fresh model of `options` for `ds`, in whichever configuration style the installed `lancer` has."
    try: from lancer.checkpoints import model_parts
    except ImportError: return build_model(ds, "offline", LancerConfig(**options), TINY, cache_dir=cache)
    config, head, switches = model_parts(options)
    return build_model(ds, "offline", config, TINY, cache_dir=cache, head=head, switches=switches)


def main():
    torch.set_num_threads(1)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name, options in CASES.items():
            ds = rule_dataset(n_users=24); ds.name = "ml-100k"
            split = leave_one_out(ds, max_history=4)
            cfg = TrainConfig(epochs_stage1=1, epochs_stage2=1, batch_size=8, num_beams=2, windows_per_user=2,
                              valid_users=0, progress=False)
            summary = train(make(ds, options, f"{d}/cache"), split, cfg, f"{d}/{name}")
            losses = [round(step["loss"], 10) for step in summary["train_steps"]]
            out[name] = {"test": summary["lancer"], "valid": [h["ndcg@10"] for h in summary["valid_history"]],
                         "losses_sha": hashlib.sha256(json.dumps(losses).encode()).hexdigest()[:16]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
