"""Tests for the end-to-end decoding comparison (lab notebook 01_ablation): every decoding of a text model gives a full top-10, the free
beams mapped by the published mapper rank exactly as `recommend` does, constrained beams are distinct items, greedy is one
item plus similarity, and `run_decoding_comparison` writes, reads and checks a reused checkpoint's configuration."""
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json

import pytest
import torch

from lancer.lab.ablation import (DECODING_ROW, compare_decodings, decoding_table, load_decoding_comparison, row_configs,
                             run_decoding_comparison, text_mappers)
from lancer.offline_backbone import OfflineBackboneConfig
from lancer.metrics import evaluate
from lancer.model import LancerConfig
from lancer.item_tokens import ItemTokenHead
from lancer.checkpoints import save_model
from lancer.recommend import recommend
from lancer.pipeline import build_model
from lancer.protocol import leave_one_out
from lancer.training import rule_dataset

TINY = OfflineBackboneConfig(n_layer=1, n_embd=32, n_head=2, vocab_size=400, epochs=2, batch_size=16)
TRAIN = {"epochs_stage1": 0, "epochs_stage2": 1, "batch_size": 8, "num_beams": 4, "valid_users": 8, "progress": False}


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    "An untrained text LANCER (offline backbone) on the rule dataset: decoding must work whatever the weights."
    torch.set_num_threads(1)
    ds = rule_dataset(n_users=12, n_items=12)
    ds.name = "ml-100k"
    split = leave_one_out(ds, max_history=4)
    config = LancerConfig(n_prefix=4, max_history=4, attn_heads=2, max_item_tokens=12)
    return build_model(ds, "offline", config, TINY, cache_dir=tmp_path_factory.mktemp("cache")), split


def test_every_decoding_gives_a_full_top10(text_model):
    model, split = text_model
    mappers = text_mappers(model)
    results = compare_decodings(model, split.test, num_beams=4, mappers=mappers, progress=False)
    names = ["constrained beams", *(f"free beams + {m}" for m in mappers), f"greedy + {next(iter(mappers))}"]
    assert list(results) == names
    for name, r in results.items():
        assert 0 <= r["ndcg@10"] <= r["recall@10"] <= 1 and r["generate_s"] >= 0 and r["map_s"] >= 0, name
    assert results["constrained beams"]["distinct_items"] == 4          # four beams, four catalogue items
    assert results[names[-1]]["distinct_items"] == 1                     # greedy: one generated text
    assert all(1 <= r["distinct_items"] <= 4 for r in results.values())
    ranked, _ = recommend(model, [ex.history for ex in split.test], num_beams=4, decoding="free",
                          exclude=[ex.seen for ex in split.test], progress=False)
    assert results[names[1]] == pytest.approx(evaluate(ranked, [ex.target for ex in split.test])
                                              | {k: results[names[1]][k] for k in ("generate_s", "map_s", "distinct_items")})


def test_compare_decodings_needs_a_text_model(text_model):
    model, split = text_model
    model.head, saved = ItemTokenHead(), model.head
    try:
        with pytest.raises(ValueError, match="text model"): compare_decodings(model, split.test, progress=False)
    finally:
        model.head = saved


def test_run_decoding_comparison_writes_reads_and_checks_checkpoints(tmp_path, monkeypatch, text_model):
    monkeypatch.setenv("LANCER_CACHE", str(tmp_path / "cache"))
    ds = rule_dataset(n_users=12, n_items=12)
    ds.name = "ml-100k"
    runs = run_decoding_comparison([0], tmp_path / "out", ds, train_changes=TRAIN, backbone_config=TINY)
    run = json.loads((tmp_path / "out" / "seed0.json").read_text())
    assert run["row"] == DECODING_ROW and run["command"] == "lancer decoding --seeds 0" and run["checkpoint"] is None
    table = decoding_table(load_decoding_comparison(tmp_path / "out"))
    assert list(table.index) == list(run["test"]) and (table["seeds"] == 1).all()
    assert runs["test_ndcg@10"].between(0, 1).all()
    model, _ = text_model                                                 # another configuration than the row's
    save_model(model, tmp_path / "other")
    assert model.config != row_configs(DECODING_ROW)[0]["config"]
    with pytest.raises(ValueError, match="configuration"):
        run_decoding_comparison([1], tmp_path / "out", ds, checkpoints={1: tmp_path / "other"}, train_changes=TRAIN,
                                backbone_config=TINY)
