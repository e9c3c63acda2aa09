"""Tests for lancer.metrics: hand-computed values, input validation, property tests, top-K, tables and plots."""
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lancer.metrics import (
    bootstrap_ci, compare_models, evaluate, evaluate_ranks, ndcg_at_k, paired_difference, plot_results, ranks_from_scores,
    recall_at_k, reciprocal_rank, results_table, target_ranks, topk_from_scores,
)


def ranked_lists(n_items=30):
    "A ranked list (unique ids, length 0..15) and a target."
    return st.tuples(st.lists(st.integers(0, n_items - 1), unique=True, max_size=15), st.integers(0, n_items - 1))


users = st.lists(ranked_lists(), min_size=1, max_size=30)


def test_hand_computed():
    # target at rank 3 -> ndcg@5 = 1/log2(4) = 0.5
    r = evaluate([[9, 8, 7, 6, 5]], [7])
    assert r == pytest.approx({"recall@5": 1.0, "recall@10": 1.0, "ndcg@5": 0.5, "ndcg@10": 0.5, "mrr@10": 1 / 3})
    # rank 1: everything 1
    assert evaluate([[4]], [4]) == pytest.approx({"recall@5": 1, "recall@10": 1, "ndcg@5": 1, "ndcg@10": 1, "mrr@10": 1})
    # rank 7: hit only at 10
    r = evaluate([list(range(10))], [6])
    assert r["recall@5"] == 0 and r["ndcg@5"] == 0 and r["recall@10"] == 1
    assert r["ndcg@10"] == pytest.approx(1 / math.log2(8)) and r["mrr@10"] == pytest.approx(1 / 7)
    # absent target, short list
    assert evaluate([[1, 2]], [3]) == {"recall@5": 0.0, "recall@10": 0.0, "ndcg@5": 0.0, "ndcg@10": 0.0, "mrr@10": 0.0}
    # rank beyond the largest K: not in MRR@10, but in the full MRR of a full ranking
    assert evaluate([list(range(20))], [19])["mrr@10"] == 0
    assert evaluate([list(range(20))], [19], full=True)["mrr"] == pytest.approx(1 / 20)
    assert "mrr" not in evaluate([list(range(20))], [19])   # a top-K list has no full MRR


def test_mrr_at_k_is_named_and_full_mrr_from_ranks():
    r = evaluate_ranks(np.array([1, 4, 20, 0]), ks=(5, 10))
    assert r["mrr@10"] == pytest.approx((1 + 1 / 4) / 4)
    assert r["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 20) / 4)


def test_mean_over_users_and_key_order():
    r = evaluate([[1, 2, 3], [3, 2, 1], [5]], [1, 1, 1], ks=(1, 3))
    assert list(r) == ["recall@1", "recall@3", "ndcg@1", "ndcg@3", "mrr@3"]
    assert r["recall@1"] == pytest.approx(1 / 3)
    assert r["recall@3"] == pytest.approx(2 / 3)
    assert r["ndcg@3"] == pytest.approx((1 + 0.5) / 3)
    assert r["mrr@3"] == pytest.approx((1 + 1 / 3) / 3)
    assert all(type(v) is float for v in r.values())


def test_accepts_arrays():
    ranked = np.array([[1, 2, 3], [4, 5, 6]])
    assert evaluate(ranked, np.array([2, 9]), ks=(2,)) == pytest.approx({"recall@2": 0.5, "ndcg@2": 0.5 / math.log2(3),
                                                                          "mrr@2": 0.25})
    assert target_ranks(ranked, [3, 4]).tolist() == [3, 1]


def test_validation():
    with pytest.raises(ValueError, match="ranked has 2 lists but targets has 1"):
        evaluate([[1], [2]], [1])
    with pytest.raises(ValueError, match="user 1 contains duplicate"):
        evaluate([[1, 2], [3, 3]], [1, 3])
    with pytest.raises(ValueError, match="at least one user"):
        evaluate([], [])
    with pytest.raises(ValueError, match="positive integers"):
        evaluate([[1]], [1], ks=(2.5,))


@settings(max_examples=200, deadline=None)
@given(users)
def test_metric_properties(data):
    ranked, targets = [r for r, _ in data], [t for _, t in data]
    r = evaluate(ranked, targets, ks=(1, 5, 10))
    assert all(0.0 <= v <= 1.0 for v in r.values())
    assert r["recall@1"] <= r["recall@5"] <= r["recall@10"]
    assert r["ndcg@1"] <= r["ndcg@5"] <= r["ndcg@10"]
    for k in (1, 5, 10):
        assert r[f"ndcg@{k}"] <= r[f"recall@{k}"] + 1e-12
    assert r["ndcg@1"] == pytest.approx(r["recall@1"])  # rank 1 has gain 1/log2(2) = 1
    assert r["mrr@10"] >= r["recall@1"] - 1e-12


@settings(max_examples=100, deadline=None)
@given(users, st.randoms(use_true_random=False))
def test_permutation_invariance_over_users(data, rnd):
    perm = list(range(len(data)))
    rnd.shuffle(perm)
    a = evaluate([data[i][0] for i in range(len(data))], [data[i][1] for i in range(len(data))])
    b = evaluate([data[i][0] for i in perm], [data[i][1] for i in perm])
    assert a == pytest.approx(b)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=40))
def test_per_user_functions(ranks):
    ranks = np.array(ranks)
    for k in (1, 3, 10):
        rec, nd = recall_at_k(ranks, k), ndcg_at_k(ranks, k)
        assert ((nd > 0) == (rec > 0)).all()
        assert (nd <= rec).all()
    rr = reciprocal_rank(ranks)
    assert np.allclose(rr[ranks > 0], 1 / ranks[ranks > 0]) and (rr[ranks == 0] == 0).all()


def test_topk_ties_and_exclusion():
    s = np.array([[0.0, 2.0, 1.0, 2.0], [3.0, 3.0, 3.0, 3.0]])
    assert topk_from_scores(s, 4).tolist() == [[1, 3, 2, 0], [0, 1, 2, 3]]
    got = topk_from_scores(torch.tensor(s), 2, exclude=[np.array([1, 3]), np.array([], dtype=np.int64)])
    assert got.tolist() == [[2, 0], [0, 1]] and got.dtype == np.int64
    # when too few items are left the list is padded with -1, never filled with excluded items (they could be hits)
    assert topk_from_scores(s[:1], 4, exclude=[np.array([1, 3])]).tolist() == [[2, 0, -1, -1]]
    assert evaluate(topk_from_scores(s[:1], 4, exclude=[np.array([1, 3])]), [1])["recall@5"] == 0
    # integer scores and float64 precision are kept
    assert topk_from_scores(np.array([[1, 5, 5]]), 2).tolist() == [[1, 2]]
    assert topk_from_scores(np.array([[1.0, 1.0 + 1e-12]]), 1).tolist() == [[1]]


def test_topk_validation():
    s = np.zeros((2, 3))
    with pytest.raises(ValueError, match="2-d"):
        topk_from_scores(np.zeros(3), 1)
    with pytest.raises(ValueError, match=r"k must be in \[1, n_items=3\]"):
        topk_from_scores(s, 0)
    with pytest.raises(ValueError, match="exclude has 1 entries but scores has 2 users"):
        topk_from_scores(s, 1, exclude=[np.array([0])])
    with pytest.raises(ValueError, match=r"exclude\[1\] has item ids outside"):
        topk_from_scores(s, 1, exclude=[np.array([0]), np.array([3])])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 12), st.integers(1, 20), st.integers(0, 2**31 - 1))
def test_topk_matches_reference_sort(n_users, n_items, seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 4, size=(n_users, n_items)).astype(np.float32)  # many ties
    k = int(rng.integers(1, n_items + 1))
    expected = [sorted(range(n_items), key=lambda i: (-s[u, i], i))[:k] for u in range(n_users)]
    assert topk_from_scores(s, k, chunk_size=5).tolist() == expected
    assert evaluate(topk_from_scores(s, k), [e[0] for e in expected], ks=(1,))["recall@1"] == 1.0


def test_results_table_and_plot():
    metrics = {"Pop": {"recall@5": 0.1, "mrr": 0.05}, "SASRec": {"recall@5": 0.2, "ndcg@5": 0.1, "mrr": 0.1}}
    t = results_table(metrics)
    assert isinstance(t, pd.DataFrame) and t.index.name == "model"
    assert t.index.tolist() == ["Pop", "SASRec"] and t.columns.tolist() == ["recall@5", "mrr", "ndcg@5"]
    assert np.isnan(t.loc["Pop", "ndcg@5"]) and t.loc["SASRec", "mrr"] == 0.1
    with pytest.raises(ValueError, match="at least one"):
        results_table({})
    ax = plot_results(metrics)
    assert len(ax.patches) == 6 and [x.get_text() for x in ax.get_xticklabels()] == t.columns.tolist()


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 8), st.integers(2, 15), st.integers(0, 2**31 - 1))
def test_ranks_from_scores_match_full_lists(n_users, n_items, seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 4, size=(n_users, n_items)).astype(np.float32)  # many ties
    exclude = [rng.choice(n_items, int(rng.integers(0, n_items)), replace=False) for _ in range(n_users)]
    targets = rng.integers(0, n_items, n_users)
    full = topk_from_scores(s, n_items, exclude=exclude)
    expected = [list(row).index(t) + 1 if t in row else 0 for row, t in zip(full.tolist(), targets)]
    assert ranks_from_scores(s, targets, exclude=exclude, chunk_size=3).tolist() == expected


def test_bootstrap_hand_examples():
    # two users 0 and 1: resampled means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4 -> the 95% interval is [0, 1]
    assert bootstrap_ci([0.0, 1.0]) == (0.5, 0.0, 1.0)
    # one user scoring 1 in every resample -> a point
    assert bootstrap_ci([1.0]) == (1.0, 1.0, 1.0)
    # seeds pooled: each user's mean over seeds is resampled
    assert bootstrap_ci([[0.0, 1.0], [1.0, 1.0]], n_boot=4000)[0] == pytest.approx(0.75)
    # four users 0, 0, 0, 1: P(mean = 0) = (3/4)^4 = 0.32 > 2.5%, P(mean >= 0.75) = 13/256 = 5% > 2.5% -> [0, 0.75]
    assert bootstrap_ci([0.0, 0.0, 0.0, 1.0], n_boot=20000)[1:] == (0.0, 0.75)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=1.5)


def test_paired_difference_and_verdicts():
    rng = np.random.default_rng(0)
    ref = rng.random((3, 400))
    assert paired_difference(ref + 0.01, ref) == pytest.approx((0.01, 0.01, 0.01))
    table = compare_models({"ref": ref, "up": ref + 0.05, "down": ref - 0.05, "noise": ref + rng.normal(0, 0.3, ref.shape)},
                           reference="ref")
    assert table.loc["up", "verdict"] == "better" and table.loc["down", "verdict"] == "worse"
    assert table.loc["noise", "diff_low"] < 0 < table.loc["noise", "diff_high"] and table.loc["noise", "verdict"] == "tie"
    with pytest.raises(KeyError, match="reference"):
        compare_models({"a": ref}, reference="b")
