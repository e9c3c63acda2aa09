"""Tests for lancer.training (+ the pipeline/CLI errors): LANCER learns a deterministic rule, checkpoints round-trip,
an interrupted run resumes where it stopped, 2-process training matches 1 process, bad input gives clear errors."""
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import time
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lancer.backbone import BackboneError
from lancer.offline_backbone import OfflineBackboneConfig
from lancer.cli import main
from lancer.metrics import evaluate, target_ranks
from lancer.model import LancerConfig
from lancer.checkpoints import load_model, save_model
from lancer.recommend import recommend
from lancer.pipeline import build_model, recommend_for_user
from lancer.protocol import leave_one_out
from lancer.training import TrainConfig, rule_dataset
from lancer.trainer import train

HERE = Path(__file__).parent
ML100K = HERE / "fixtures" / "ml-100k"


def _rule(n_users: int, max_history: int = 4):
    ds = rule_dataset(n_users=n_users)
    ds.name = "ml-100k"                                                   # borrow the MovieLens template
    return ds, leave_one_out(ds, max_history=max_history)


def _no_dropout(model):
    for m in model.modules():
        if isinstance(m, nn.Dropout): m.p = 0.0
    return model


# ---------------------------------------------------------------- learning + checkpoints (one trained model)

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "LANCER trained on the next-item rule (60 users, 12 items): built once, shared by the learning/checkpoint tests."
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds, split = _rule(60)
    out = tmp_path_factory.mktemp("run")
    model = build_model(ds, "offline", LancerConfig(n_prefix=4, max_history=4, attn_heads=2),
                        OfflineBackboneConfig(n_layer=2, n_embd=32, n_head=2, vocab_size=400, epochs=10, batch_size=16),
                        cache_dir=tmp_path_factory.mktemp("cache"))
    cfg = TrainConfig(epochs_stage1=1, epochs_stage2=20, batch_size=16, lr_stage1=5e-3, lr_stage2=5e-3,
                      warmup_ratio=0.0, num_beams=3, progress=False)
    summary = train(model, split, cfg, out)
    return ds, split, model, out, summary


def _test_ranking(model, split, k=5):
    ranked, beams = recommend(model, [ex.history for ex in split.test], k=k, num_beams=3, progress=False)
    return ranked, beams


def test_learns_the_rule(trained):
    ds, split, model, out, summary = trained
    ranked, _ = _test_ranking(model, split)
    metrics = evaluate(ranked, [ex.target for ex in split.test], ks=(1,))
    assert metrics["recall@1"] >= 0.9, metrics
    assert summary["lancer"]["recall@5"] >= 0.9, summary["lancer"]
    assert json.loads((out / "metrics.json").read_text())["lancer"] == summary["lancer"]
    assert len(summary["valid_history"]) == 21                             # 1 + 20 epochs validated


def test_save_load_same_recommendations(trained, tmp_path):
    ds, split, model, _, _ = trained
    before = _test_ranking(model, split)
    save_model(model, tmp_path / "ckpt", {"dataset": "rule"})
    loaded = load_model(tmp_path / "ckpt", ds.items)
    assert _test_ranking(loaded, split) == before
    for (n, p), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n == n2 and torch.equal(p.cpu(), p2), n
    assert json.loads((tmp_path / "ckpt" / "lancer.json").read_text())["extra"] == {"dataset": "rule"}


def test_best_checkpoint_reproduces_test_metrics(trained):
    ds, split, _, out, summary = trained
    best = load_model(out / "best", ds.items)
    ranked, _ = recommend(best, [ex.history for ex in split.test], k=len(best.texts), num_beams=3,
                          decoding=summary["config"]["decoding"], exclude=[ex.seen for ex in split.test],
                          progress=False)                               # as the run evaluated its test split
    again = evaluate(ranked, [ex.target for ex in split.test], full=True)
    assert again == pytest.approx(summary["lancer"])
    assert target_ranks(ranked, [ex.target for ex in split.test]).tolist() == summary["test_ranks"]
    assert _test_ranking(load_model(out / "best", ds.items), split) == _test_ranking(best, split)


def test_checkpoints_are_safetensors_and_json(trained):
    _, _, _, out, _ = trained
    files = [p for p in out.rglob("*") if p.is_file()]
    for d in ("best", "last"):
        assert (out / d / "prompts.safetensors").exists() and (out / d / "lm" / "model.safetensors").exists()
    assert (out / "last" / "optimizer.safetensors").exists() and (out / "last" / "trainer.json").exists()
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")]
    assert {p.suffix for p in files} <= {".safetensors", ".json"}, {p.suffix for p in files}


# ---------------------------------------------------------------- resume + 2 processes (tiny model, dropout off)

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "An untrained tiny model for 8 users, saved as the common starting point of the resume/accelerate runs."
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds, split = _rule(8)
    model = build_model(ds, "offline", LancerConfig(n_prefix=3, max_history=4, attn_heads=2, prompt_dropout=0.0),
                        OfflineBackboneConfig(n_layer=2, n_embd=32, n_head=2, vocab_size=400, epochs=1, batch_size=16),
                        cache_dir=tmp_path_factory.mktemp("cache"))
    init = save_model(model, tmp_path_factory.mktemp("init") / "init")
    return ds, split, init


def _fresh(tiny):
    ds, _, init = tiny
    return _no_dropout(load_model(init, ds.items))


@pytest.mark.parametrize("stop, where, ema_decay", [(3, (1, 3), 0.0), (7, (2, 2), 0.0),   # inside stage 1, stage 2
                                                     (3, (1, 3), 0.9), (7, (2, 2), 0.9)])  # the same with weight averaging
def test_resume_continues_from_saved_step(tiny, tmp_path, stop, where, ema_decay):
    ds, split, _ = tiny
    # 40 training examples, batch 8: 5 steps per stage, 10 in all; interrupt after `stop` steps
    cfg = dict(epochs_stage1=1, epochs_stage2=1, batch_size=8, lr_stage1=5e-3, lr_stage2=5e-3, warmup_ratio=0.0,
               num_beams=1, progress=False, ema_decay=ema_decay)
    full = _fresh(tiny)
    train(full, split, TrainConfig(**cfg), tmp_path / "full")

    stopped = train(_fresh(tiny), split, TrainConfig(**cfg, max_steps=stop), tmp_path / "resumed")
    assert stopped["stopped_at"]["global_step"] == stop
    assert (stopped["stopped_at"]["stage"], stopped["stopped_at"]["step_in_epoch"]) == where
    state = json.loads((tmp_path / "resumed" / "last" / "trainer.json").read_text())
    assert (state["global_step"], state["stage"], state["step_in_epoch"]) == (stop, *where)
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    assert state["wall_time_s"] > 0 and state["cpu_time_s"] > 0
    state |= {"wall_time_s": 1000.0, "cpu_time_s": 500.0}                  # as if the first process had run long
    (tmp_path / "resumed" / "last" / "trainer.json").write_text(json.dumps(state))

    resumed = _fresh(tiny)                                                 # a new process: weights from the start
    t0 = time.time()
    summary = train(resumed, split, TrainConfig(**cfg), tmp_path / "resumed", resume=True)
    assert 1000 < summary["wall_time_s"] <= 1000 + time.time() - t0 + 0.1   # both processes' time, the test included
    assert 500 < summary["cpu_time_s"]
    ends = [json.loads((tmp_path / d / "last" / "trainer.json").read_text()) for d in ("full", "resumed")]
    assert ends[0]["global_step"] == ends[1]["global_step"] == 10           # the remaining steps, not a restart
    assert ends[1]["last_loss"] == pytest.approx(ends[0]["last_loss"], rel=1e-4, abs=1e-4)
    for (n, p), (_, q) in zip(full.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=n)
    assert summary["lancer"] == pytest.approx(json.loads((tmp_path / "full" / "metrics.json").read_text())["lancer"])
    averages = [tmp_path / d / "last" / "average.safetensors" for d in ("full", "resumed")]
    assert averages[0].exists() == averages[1].exists() == (ema_decay > 0)
    if ema_decay:
        full_avg, resumed_avg = load_file(averages[0]), load_file(averages[1])
        assert full_avg["n_averaged"].item() == resumed_avg["n_averaged"].item() == 5   # stage 2's 5 steps
        weights = dict(full.named_parameters())
        for n, p in full_avg.items():
            if n == "n_averaged": continue
            torch.testing.assert_close(resumed_avg[n], p, rtol=1e-4, atol=1e-5, msg=n)
        lag = max((full_avg[n] - weights[n].detach()).abs().max().item() for n in full_avg if n != "n_averaged")
        assert lag > 1e-4                                  # the average trails the trained weights: it is not a copy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_script(cmd: list[str], out: Path) -> dict:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_two_processes_match_one(tiny, tmp_path):
    _, _, init = tiny
    script = str(HERE / "accelerate_train.py")
    args = ["--init", str(init), "--steps", "5"]
    one = _run_script([sys.executable, script, *args, "--batch-size", "8", "--output-dir", str(tmp_path / "one")],
                      tmp_path / "one")
    two = _run_script([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                       "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                       "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
                       script, *args, "--batch-size", "4", "--output-dir", str(tmp_path / "two")], tmp_path / "two")
    assert (one["num_processes"], two["num_processes"]) == (1, 2)
    assert one["stopped_at"]["global_step"] == two["stopped_at"]["global_step"] == 5
    sched = [json.loads((tmp_path / d / "last" / "optimizer.json").read_text())["scheduler"]["last_epoch"]
             for d in ("one", "two")]
    assert sched == [5, 5], f"LR scheduler steps after 5 optimizer steps (1 process, 2 processes): {sched}"
    assert two["final_loss"] == pytest.approx(one["final_loss"], abs=0.01)


# ---------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def checkpoint(tiny, tmp_path_factory):
    "A checkpoint whose metadata points at the small MovieLens fixture (so the CLI can load its users)."
    ds, _, init = tiny
    path = tmp_path_factory.mktemp("ckpt") / "ckpt"
    return save_model(load_model(init, ds.items), path, {"dataset": "ml-100k", "data_dir": str(ML100K),
                                                          "min_interactions": 3})


def test_unknown_user_api(checkpoint):
    with pytest.raises(KeyError, match="nobody"): recommend_for_user(checkpoint, "nobody")


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lancer: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def test_unknown_user_cli(capsys, checkpoint):
    assert "nobody" in _cli_error(capsys, ["recommend", "--checkpoint", str(checkpoint), "--user", "nobody"])


def test_unknown_dataset_cli(capsys, tmp_path):
    assert "nope" in _cli_error(capsys, ["data", "--dataset", "nope"])
    assert "nope" in _cli_error(capsys, ["train", "--dataset", "nope", "--output-dir", str(tmp_path / "d")])
    assert not (tmp_path / "d").exists()


def test_unloadable_backbone(tiny, capsys, tmp_path):
    ds, _, _ = tiny
    with pytest.raises(BackboneError, match="offline"): build_model(ds, "no/such-model")
    line = _cli_error(capsys, ["train", "--dataset", "ml-100k", "--data-dir", str(ML100K), "--backbone", "no/such-model",
                               "--output-dir", str(tmp_path / "d"), "--min-interactions", "3"])
    assert "no/such-model" in line and "offline" in line


def test_cached_item_representations_train(tmp_path):
    "Cached mode (catalogue table refreshed every 3 steps, knowledge loss on 4 sampled items) runs and learns."
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds, split = _rule(40)
    model = build_model(ds, "offline", LancerConfig(n_prefix=4, max_history=4, attn_heads=2),
                        OfflineBackboneConfig(n_layer=2, n_embd=32, n_head=2, vocab_size=400, epochs=2, batch_size=16),
                        cache_dir=tmp_path / "cache")
    cfg = TrainConfig(epochs_stage1=1, epochs_stage2=4, batch_size=16, lr_stage1=5e-3, lr_stage2=5e-3, warmup_ratio=0.0,
                      num_beams=3, progress=False, item_reps="cached", refresh_every=3, knowledge_items=4)
    summary = train(model, split, cfg, tmp_path / "run")
    losses = [s["loss"] for s in summary["train_steps"]]
    assert len(losses) == 5 * 13 and all(map(lambda v: v == v, losses))          # 200 windows / 16 = 13 steps per epoch
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses
    with pytest.raises(ValueError, match="item_reps"):
        train(model, split, TrainConfig(item_reps="approximate", progress=False), tmp_path / "bad")


def test_group_by_length_batches_examples_of_similar_length(tmp_path, monkeypatch):
    "group_by_length=True trains on the same examples as random batches, with less padding in the generating LM's batches."
    import lancer.trainer as trainer
    torch.set_num_threads(1)
    ds, split = _rule(60)
    model = build_model(ds, "offline", LancerConfig(n_prefix=4, max_history=4, attn_heads=2),
                        OfflineBackboneConfig(n_layer=2, n_embd=32, n_head=2, vocab_size=400, epochs=1, batch_size=16),
                        cache_dir=tmp_path / "cache")
    batches = []
    def recorded(*args, **kwargs):
        batch = original(*args, **kwargs)
        batches.append(batch)
        return batch
    original = trainer.sequence_batch
    monkeypatch.setattr(trainer, "sequence_batch", recorded)
    padding, seen = {}, {}
    for grouped in (False, True):
        batches.clear()
        cfg = TrainConfig(epochs_stage1=1, epochs_stage2=0, batch_size=8, num_beams=2, valid_users=8, progress=False,
                          group_by_length=grouped)
        train(model, split, cfg, tmp_path / f"run{grouped}")
        padding[grouped] = sum(int((b["attention_mask"] == 0).sum()) for b in batches)
        seen[grouped] = sorted(tuple(row[row != 0].tolist()) for b in batches for row in b["input_ids"] * b["attention_mask"])
    assert seen[True] == seen[False]                                      # the same sequences, batched differently
    assert padding[True] < 0.5 * padding[False], padding


def test_recommend_leaves_out_the_users_history(checkpoint, capsys):
    from lancer.pipeline import _checkpoint_data
    ds, _, _ = _checkpoint_data(checkpoint)
    user = ds.users[0]
    seen = {ds.items.raw_id[i] for i in ds.sequences[0]}
    for decoding in ("constrained", "free"):
        rec = recommend_for_user(checkpoint, user, k=10, num_beams=4, decoding=decoding)
        assert not {r["raw_id"] for r in rec["recommendations"]} & seen            # the history is excluded by default
    with_seen = recommend_for_user(checkpoint, user, k=ds.n_items, num_beams=4, include_seen=True)
    assert seen <= {r["raw_id"] for r in with_seen["recommendations"]}           # --include-seen keeps it
    assert main(["recommend", "--checkpoint", str(checkpoint), "--user", str(user)]) == 0
    printed = capsys.readouterr().out.split("top-")[1]
    assert not any(ds.items.title[i] in printed for i in ds.sequences[0])


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_recommend_many_users_in_one_call(checkpoint, tmp_path, capsys, suffix):
    import pandas as pd
    from lancer.pipeline import _checkpoint_data
    ds, _, _ = _checkpoint_data(checkpoint)
    out = tmp_path / f"recs{suffix}"
    assert main(["recommend", "--checkpoint", str(checkpoint), "--users", "all", "-k", "2", "--output", str(out)]) == 0
    table = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".jsonl": lambda p: pd.read_json(p, lines=True)}[suffix](out)
    assert sorted(table["user"].astype(str).unique()) == sorted(ds.users)
    assert (table.groupby("user").size() <= 2).all() and set(table["rank"]) <= {1, 2}
    for user, rows in table.groupby(table["user"].astype(str)):                 # nobody gets what they already saw
        assert not set(rows["item_id"]) & set(ds.sequences[ds.users.index(user)].tolist())
    (tmp_path / "who.txt").write_text(f"{ds.users[0]}\n")
    assert main(["recommend", "--checkpoint", str(checkpoint), "--users", str(tmp_path / "who.txt"), "-k", "1"]) == 0
    assert main(["recommend", "--checkpoint", str(checkpoint), "--users", "all", "--output", str(tmp_path / "r.xls")]) == 2
