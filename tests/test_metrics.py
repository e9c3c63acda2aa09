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
    evaluate, ndcg_at_k, plot_results, recall_at_k, reciprocal_rank, results_table, target_ranks, topk_from_scores,
)


def ranked_lists(n_items=30):
    "A ranked list (unique ids, length 0..15) and a target."
    return st.tuples(st.lists(st.integers(0, n_items - 1), unique=True, max_size=15), st.integers(0, n_items - 1))


users = st.lists(ranked_lists(), min_size=1, max_size=30)


def test_hand_computed():
    # target at rank 3 -> ndcg@5 = 1/log2(4) = 0.5
    r = evaluate([[9, 8, 7, 6, 5]], [7])
    assert r == pytest.approx({"recall@5": 1.0, "recall@10": 1.0, "ndcg@5": 0.5, "ndcg@10": 0.5, "mrr": 1 / 3})
    # rank 1: everything 1
    assert evaluate([[4]], [4]) == pytest.approx({"recall@5": 1, "recall@10": 1, "ndcg@5": 1, "ndcg@10": 1, "mrr": 1})
    # rank 7: hit only at 10
    r = evaluate([list(range(10))], [6])
    assert r["recall@5"] == 0 and r["ndcg@5"] == 0 and r["recall@10"] == 1
    assert r["ndcg@10"] == pytest.approx(1 / math.log2(8)) and r["mrr"] == pytest.approx(1 / 7)
    # absent target, short list
    assert evaluate([[1, 2]], [3]) == {"recall@5": 0.0, "recall@10": 0.0, "ndcg@5": 0.0, "ndcg@10": 0.0, "mrr": 0.0}
    # rank beyond the largest K still counts for MRR
    assert evaluate([list(range(20))], [19])["mrr"] == pytest.approx(1 / 20)


def test_mean_over_users_and_key_order():
    r = evaluate([[1, 2, 3], [3, 2, 1], [5]], [1, 1, 1], ks=(1, 3))
    assert list(r) == ["recall@1", "recall@3", "ndcg@1", "ndcg@3", "mrr"]
    assert r["recall@1"] == pytest.approx(1 / 3)
    assert r["recall@3"] == pytest.approx(2 / 3)
    assert r["ndcg@3"] == pytest.approx((1 + 0.5) / 3)
    assert r["mrr"] == pytest.approx((1 + 1 / 3) / 3)
    assert all(type(v) is float for v in r.values())


def test_accepts_arrays():
    ranked = np.array([[1, 2, 3], [4, 5, 6]])
    assert evaluate(ranked, np.array([2, 9]), ks=(2,)) == pytest.approx({"recall@2": 0.5, "ndcg@2": 0.5 / math.log2(3),
                                                                          "mrr": 0.25})
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
    assert r["mrr"] >= r["recall@1"] - 1e-12


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
    # excluded items fill the tail only when nothing else is left
    assert topk_from_scores(s[:1], 4, exclude=[np.array([1, 3])]).tolist() == [[2, 0, 1, 3]]
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
