"""Tests for lancer.lab.bench: the naive path computes what lancer computes, and a tiny run writes a complete report."""
import json

import pytest
import torch

from lancer.lab.ablation import ABLATIONS, slug
from lancer.lab.bench import (QUALITY_RUNS, BenchConfig, bench_model, bench_table, naive_loss, naive_recommend, run_bench,
                          training_quality)
from lancer.model import sequence_batch
from lancer.recommend import recommend
from lancer.protocol import leave_one_out, training_examples
from lancer.training import rule_dataset


@pytest.fixture(scope="module")
def rule():
    ds = rule_dataset(n_users=30)
    ds.name = "ml-100k"                                                   # borrow the MovieLens template
    return ds


@pytest.fixture(scope="module")
def tiny(rule, tmp_path_factory):
    return bench_model(rule, n_layer=2, n_embd=32, n_head=2, n_positions=200, output_dir=tmp_path_factory.mktemp("bb"))


def test_naive_loss_equals_lancer_loss_for_every_example(rule, tiny):
    tiny.eval()
    split = leave_one_out(rule, max_history=10)
    for ex in training_examples(split)[:12]:
        fast = tiny(**sequence_batch(tiny.texts, [ex], 10, tiny.pad_id))["loss"]
        torch.testing.assert_close(naive_loss(tiny, ex, pad_to=160), fast, rtol=1e-4, atol=1e-4)


def test_naive_loss_rejects_inputs_longer_than_pad_to(rule, tiny):
    ex = training_examples(leave_one_out(rule, max_history=10))[-1]
    with pytest.raises(ValueError, match="pad_to=8"):
        naive_loss(tiny, ex, pad_to=8)


def test_naive_evaluation_returns_lancers_lists(rule, tiny):
    split = leave_one_out(rule, max_history=10)
    users = [ex.history for ex in split.valid[:5]]
    fast, _ = recommend(tiny, users, k=10, num_beams=3, decoding="free", progress=False)
    assert naive_recommend(tiny, users, k=10, num_beams=3, pad_to=160) == fast


def test_tiny_run_writes_a_complete_report(rule, tmp_path):
    out = tmp_path / "bench.json"
    cfg = BenchConfig(n_layer=2, n_embd=32, n_head=2, train_batches=1, naive_sequences=1, eval_users=4,
                      naive_eval_users=2, num_beams=3, pad_to=160)
    report = run_bench(cfg, out, ds=rule, progress=False, results_dir=None)
    saved = json.loads(out.read_text())
    assert saved["config"]["pad_to"] == 160 and saved["versions"]["torch"] == torch.__version__
    for path in ("lancer", "naive"):
        for key in ("stage1_seq_per_s", "stage2_seq_per_s", "eval_users_per_s", "peak_rss_mb"):
            assert saved[path][key] > 0, (path, key)
    assert saved["lancer"]["stage1_gflops"] > 0 and saved["matmul_peak_gflops"] > 0
    for variant in ("cached", "grouped", "grouped_cached"):
        assert set(saved[f"ratio_{variant}"]) == {"stage1_seq_per_s", "stage2_seq_per_s"}, variant
        assert saved["lancer"][f"stage2_{variant}_seq_per_s"] > 0, variant
    assert 0 <= saved["lancer"]["padding"]["grouped"] <= saved["lancer"]["padding"]["random"] < 1
    assert saved["quality"] == {}
    assert saved["exactness"]["same_top10_lists"] == 1.0 and saved["exactness"]["loss_abs_diff"] < 1e-4
    assert {(r["users"], r["history_cap"]) for r in saved["scaling"]} == {(0.25, 10), (0.5, 10), (1.0, 10), (1.0, 5), (1.0, 20)}
    assert list(bench_table(report).columns) == ["naive", "lancer", "lancer / naive"] and len(bench_table(report)) == 9


def test_training_quality_reads_the_text_rows_of_the_ablation(tmp_path):
    "The quality folders are the ablation rows of the text preset (exact, cached, grouped); each gets mean, std and seeds."
    rows = {mode: [r for r in ABLATIONS if slug(r) == folder] for mode, folder in QUALITY_RUNS.items()}
    assert all(len(found) == 1 and ABLATIONS[found[0]][0] == "text" for found in rows.values()), rows
    assert ABLATIONS[rows["cached"][0]][2] == {"item_reps": "cached"} and ABLATIONS[rows["exact"][0]][2] == {}
    assert ABLATIONS[rows["grouped"][0]][2] == {"group_by_length": True}
    assert ABLATIONS[rows["grouped_cached"][0]][2] == {"group_by_length": True, "item_reps": "cached"}
    for seed, (valid, test) in enumerate([(0.03, 0.02), (0.05, 0.03)]):
        path = tmp_path / QUALITY_RUNS["exact"] / f"seed{seed}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"seed": seed, "best_valid_ndcg@10": valid, "lancer": {"ndcg@10": test}}))
    quality = training_quality(tmp_path)
    assert set(quality) == {"exact"} and quality["exact"]["seeds"] == [0, 1]
    assert quality["exact"]["best_valid_ndcg@10"] == pytest.approx(0.04)
    assert quality["exact"]["test_ndcg@10"] == pytest.approx(0.025) and quality["exact"]["test_std"] == pytest.approx(0.00707, abs=1e-5)
    assert training_quality(None) == {}
