"""Tests for lancer.baselines and .baseline_training: shapes, causality, learning, most-popular order, metrics.json."""
import json
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from lancer.baselines import (BASELINES, GRU4Rec, GRU4RecConfig, MostPopular, NARM, NARMConfig, SASRec, SASRecConfig,
                              evaluate_model, model_ranks, pad_left, score_all_items)
from lancer.baseline_training import TrainConfig, run_baselines, train_baseline, training_windows
from lancer.metrics import topk_from_scores
from lancer.protocol import leave_one_out

torch.set_num_threads(1)
METRICS = {"recall@5", "recall@10", "ndcg@5", "ndcg@10", "mrr@10", "mrr"}
SMALL = {"pop": {}, "sasrec": dict(n_embd=16, n_head=2, n_layer=1), "gru4rec": dict(n_embd=16, hidden=16),
         "narm": dict(n_embd=16, hidden=16)}


def rule_dataset(n_items=24, n_users=120, length=14, seed=0):
    "Sequences following a fixed random permutation: next(i) = perm[i] (deterministic next-item rule)."
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_items)
    seqs = []
    for _ in range(n_users):
        s = [int(rng.integers(n_items))]
        for _ in range(length - 1): s.append(int(perm[s[-1]]))
        seqs.append(np.array(s, dtype=np.int64))
    return SimpleNamespace(sequences=seqs, n_items=n_items, users=[str(u) for u in range(n_users)])


@pytest.mark.parametrize("model", [SASRec(SASRecConfig(n_items=30, max_len=8, n_embd=16, n_head=2)),
                                   GRU4Rec(GRU4RecConfig(n_items=30, max_len=8, n_embd=16, hidden=24)),
                                   NARM(NARMConfig(n_items=30, max_len=8, n_embd=16, hidden=24))])
def test_shapes(model):
    x = pad_left([np.arange(5), np.arange(12), np.array([3])], 8, pad_id=30)
    assert x.shape == (3, 8) and x[0, :3].eq(30).all() and x[1, -1] == 11
    assert model(x).shape == (3, 8, 16)
    assert model.item_scores(x).shape == (3, 30)
    scores = score_all_items(model, [np.arange(5), np.array([1, 2])])
    assert scores.shape == (2, 30) and torch.isfinite(scores).all()


def test_sasrec_causal():
    torch.manual_seed(0)
    m = SASRec(SASRecConfig(n_items=40, max_len=10, n_embd=16, n_head=4, n_layer=2)).eval()
    x = torch.randint(0, 40, (4, 10))
    x[0, :3] = 40                                                # some padding too
    for t in range(9):
        y = x.clone()
        y[:, t + 1:] = torch.randint(0, 40, (4, 9 - t))
        torch.testing.assert_close(m(x)[:, :t + 1], m(y)[:, :t + 1])
        assert not torch.allclose(m(x)[:, t + 1:], m(y)[:, t + 1:])


def test_training_windows_cover_each_target_once():
    seqs = [np.arange(100, 117), np.arange(5), np.array([7])]
    for stride in (1, 3, 6):
        x, y = training_windows(seqs, max_len=6, stride=stride, rng=np.random.default_rng(stride), pad_id=-1)
        assert sorted(y[y >= 0].tolist()) == sorted(list(range(101, 117)) + [1, 2, 3, 4])
        assert (y[y >= 0] == x[y >= 0] + 1).all()


def test_every_position_windows_repeat_targets_with_different_contexts():
    "every_position=True: each window is a target at every real position, so with stride < max_len targets recur."
    seqs = [np.arange(100, 117), np.arange(5)]
    x, y = training_windows(seqs, max_len=6, stride=2, pad_id=-1, every_position=True)
    assert set(y[y >= 0].tolist()) == set(range(101, 117)) | {1, 2, 3, 4}
    assert (y[y >= 0] == x[y >= 0] + 1).all() and ((y >= 0) == (x >= 0)).all()      # every real input has its target
    assert (y >= 0).sum() > 2 * len(set(y[y >= 0].tolist()))                          # most targets more than twice
    x, y = training_windows(seqs, max_len=6, stride=6, pad_id=-1, every_position=True)
    assert sorted(y[y >= 0].tolist()) == sorted(list(range(101, 117)) + [1, 2, 3, 4])  # stride = max_len: once each


def test_most_popular_order():
    pop = MostPopular(6).fit([np.array([2, 2, 5]), np.array([5, 2, 0]), np.array([4, 0])])
    assert pop.scores.argsort(descending=True).tolist() == [2, 0, 5, 4, 1, 3]
    scores = score_all_items(pop, [np.array([1]), np.array([3, 4])])
    assert scores.shape == (2, 6) and (scores[0] == scores[1]).all()


@pytest.mark.parametrize("name,overrides", [("sasrec", dict(n_embd=32, n_head=2, n_layer=1, dropout=0.1)),
                                            ("gru4rec", dict(n_embd=32, hidden=32, dropout=0.1)),
                                            ("narm", dict(n_embd=32, hidden=32, dropout=0.1, out_dropout=0.1))])
def test_learns_deterministic_rule(name, overrides):
    split = leave_one_out(rule_dataset(), max_history=5)
    t0 = time.time()
    model, details = train_baseline(name, split, TrainConfig(epochs=40, lr=1e-2, batch_size=64, patience=40,
                                                             show_progress=False, exclude_seen=False), **overrides)
    assert time.time() - t0 < 30
    assert evaluate_model(model, split.test, exclude_seen=False, ks=(1,))["recall@1"] > 0.9  # the rule revisits items
    assert details["best_epoch"] >= 1 and len(details["log"]) == details["epochs_run"]


def test_fit_is_deterministic():
    split = leave_one_out(rule_dataset(n_users=40), max_history=5)
    cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=32, show_progress=False, seed=3)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)                                   # different global state must not matter
        model, _ = train_baseline("sasrec", split, cfg, n_embd=16, n_head=2, n_layer=1)
        runs.append(score_all_items(model, [e.history for e in split.test]))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


def test_run_baselines_metrics_json(tmp_path):
    from lancer.data import SeqDataset
    toy = rule_dataset(n_items=20, n_users=30, length=8)
    items = pd.DataFrame({"raw_id": [str(i) for i in range(20)], "title": [f"item {i}" for i in range(20)]})
    items.index.name = "item_id"
    ds = SeqDataset(name="toy", items=items, users=toy.users, sequences=toy.sequences)
    metrics = run_baselines(ds, output_dir=tmp_path, max_history=4, show_progress=False,
                            train=dict(epochs=2, batch_size=32), sasrec=dict(n_embd=16, n_head=2, n_layer=1),
                            gru4rec=dict(n_embd=16, hidden=16), narm=dict(n_embd=16, hidden=16))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics
    assert set(saved) == set(BASELINES)
    for model_metrics in saved.values():
        assert set(model_metrics) == METRICS
        assert all(isinstance(v, float) and 0 <= v <= 1 for v in model_metrics.values())
    details = json.loads((tmp_path / "baselines_details.json").read_text())
    assert set(details["models"]) == set(BASELINES) and "wall_time_s" in details["models"]["sasrec"]
    ranks = json.loads((tmp_path / "ranks.json").read_text())
    assert set(ranks) == set(BASELINES) and all(len(r) == ds.n_users for r in ranks.values())
    with pytest.raises(ValueError, match="unknown model"):
        run_baselines(ds, models=("bpr",))


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_excludes_seen_items(name):
    split = leave_one_out(rule_dataset(n_users=40, length=8), max_history=5)  # some users revisit their target
    model, _ = train_baseline(name, split, TrainConfig(epochs=1, batch_size=32, show_progress=False), **SMALL[name])
    examples = split.test
    assert any(ex.target in ex.seen for ex in examples) and any(ex.target not in ex.seen for ex in examples)
    scores = score_all_items(model, [ex.history for ex in examples])
    full = topk_from_scores(scores, split.n_items, exclude=[ex.seen for ex in examples])
    ranks = model_ranks(model, examples)                                  # exclusion is the default
    for row, ex, rank in zip(full.tolist(), examples, ranks):
        assert not set(row) & set(ex.seen.tolist())                       # no seen item anywhere in the ranking
        assert rank == (0 if ex.target in ex.seen else row.index(ex.target) + 1)
    assert (model_ranks(model, examples, exclude_seen=False) > 0).all()   # without exclusion every target is ranked
