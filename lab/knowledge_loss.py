"""Zero-shot knowledge: how well each backbone already predicts the catalogue's titles, before any LANCER training.

For every ML-100K item the knowledge text of notebook 05 is the context (`genres : Comedy year : 1995 title : `) and the
title the target. Each backbone reads the texts as they are, with no prompt, and we report the mean loss on the title
tokens in nats per token and in bits per character of the title (the second compares across tokenizers). Each text
starts the way its tokenizer starts one (Gemma's `<bos>`; SmolLM2 and the offline GPT-2 add nothing). The offline
backbone was pretrained on these very texts (notebook 04), so it is not zero-shot: it is the bar the pretrained LMs'
general knowledge is measured against.

    python lab/knowledge_loss.py --backbones offline smollm2-135m gemma3-270m --output results/premise/knowledge-loss.json
    python lab/knowledge_loss.py --backbones smollm2-135m --items 300 --precision fp32   # bf16 parity, with:
    python lab/knowledge_loss.py --backbones smollm2-135m --items 300 --precision bf16

Runs on CPU, one thread per process by default (OMP_NUM_THREADS), pretrained LMs under bf16 autocast; the time each
backbone took is written beside its numbers. The pretrained backbones need `pip install 'lancer[pretrained]'`.
"""
import argparse
import json
import math
import time
from pathlib import Path

import torch

from lancer.backbone import load_backbone
from lancer.offline_backbone import OfflineBackboneConfig
from lancer.download import write_atomic
from lancer.pipeline import offline_backbone_path, prepare_data
from lancer.protocol import template_for


@torch.inference_mode()
def title_loss(lm, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 16, bf16: bool = False) -> dict:
    "Total nats over the title tokens of `(context, title)` pairs, per token and per title character (in bits)."
    nats, tokens, chars = 0.0, 0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(pairs), batch_size):
        rows, spans = [], []
        for context, title in pairs[start:start + batch_size]:
            ctx = tokenizer(context.rstrip()).input_ids                     # the tokenizer's own start (Gemma: <bos>)
            tgt = tokenizer(" " + title, add_special_tokens=False).input_ids
            rows.append(ctx + tgt); spans.append((len(ctx), len(ctx) + len(tgt))); chars += len(title)
        T = max(map(len, rows))
        ids = torch.tensor([r + [pad] * (T - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = lm(input_ids=ids, attention_mask=mask).logits.float()                   # [b, T, V]
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]  # [b, T-1]: log p(token t+1)
        for b, (lo, hi) in enumerate(spans):
            nats -= logp[b, lo - 1:hi - 1].sum().item(); tokens += hi - lo
    return {"nats_per_token": nats / tokens, "bits_per_char": nats / math.log(2) / chars, "title_tokens": tokens,
            "title_chars": chars}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["offline", "smollm2-135m", "gemma3-270m"])
    p.add_argument("--output", default="results/premise/knowledge-loss.json")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 autocast for the pretrained LMs, fp32 for the offline one")
    p.add_argument("--items", type=int, default=None, help="only the first N items (a quick check)")
    args = p.parse_args()
    ds, split = prepare_data("ml-100k")
    template = template_for(ds.name)
    pairs = [template.knowledge_text(item) for item in ds.items.to_dict("records")][:args.items]
    out = Path(args.output)
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in args.backbones:
        bf16 = name != "offline" if args.precision == "auto" else args.precision == "bf16"
        key = name if args.precision == "auto" and args.items is None else f"{name} ({args.precision}, {len(pairs)} items)"
        if key in results: continue                                     # measured already
        path = offline_backbone_path(ds, template, OfflineBackboneConfig(seed=0), split=split) if name == "offline" else name
        lm, tokenizer = load_backbone(path)
        t0 = time.time()
        results[key] = title_loss(lm, tokenizer, pairs, bf16=bf16) | {
            "parameters": sum(p.numel() for p in lm.parameters()), "seconds": round(time.time() - t0, 1),
            "threads": torch.get_num_threads(), "bf16": bf16, "items": len(pairs)}
        write_atomic(out, json.dumps(results, indent=2))
        print(key, results[key], flush=True)


if __name__ == "__main__":
    main()
