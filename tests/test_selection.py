"""Model selection (notebook 13) on tiny data: LANCER's selection never reads a test target (changing every test item
changes nothing it records), a record obeys its rule, and `main_job` runs what the records chose and reports CIs."""
import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch

from lancer.offline_backbone import OfflineBackboneConfig
from lancer.model import LancerConfig
from lancer.checkpoints import model_kwargs, model_options
from lancer.item_tokens import ItemTokenHead
from lancer.main_job import main_job
from lancer.pipeline import train_lancer
from lancer.selection import _filled, chosen_config, evaluate_chosen, run_candidate, select, write_json
from lancer.training import TrainConfig, rule_dataset

TINY = OfflineBackboneConfig(n_layer=1, n_embd=32, n_head=2, vocab_size=300, epochs=2, batch_size=16)
LANCER = {"model": model_options(LancerConfig(n_prefix=4, max_history=4, attn_heads=2), ItemTokenHead(loss_on="all")),
          "train": asdict(TrainConfig(epochs_stage1=1, epochs_stage2=2, batch_size=16, windows_per_user=0, window_stride=4,
                                      item_reps="cached", valid_users=0, progress=False))}
CANDIDATES = {"plain": LANCER, "smoothed": {"model": LANCER["model"] | {"label_smoothing": 0.2}, "train": LANCER["train"]}}


def toy(shift_test_items: int = 0):
    "The 12-item rule data set under a name with a text template; optionally every user's last (test) item moved."
    ds = rule_dataset(n_users=40, n_items=12, length=7)
    ds.name = "ml-100k"
    for seq in ds.sequences: seq[-1] = (seq[-1] + shift_test_items) % 12
    return ds


@pytest.fixture(autouse=True)
def small_world(tmp_path, monkeypatch):
    monkeypatch.setenv("LANCER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("lancer.pipeline.OfflineBackboneConfig", lambda: TINY)   # the tiny backbone by default
    torch.set_num_threads(1)


def test_locked_run_never_tests(tmp_path):
    summary = train_lancer(toy(), tmp_path / "run", **model_kwargs(LANCER["model"]),
                           train_config=TrainConfig(**LANCER["train"]), lock_test=True)
    assert "lancer" not in summary and "test_ranks" not in summary and summary["best_valid_ndcg@10"] > 0


def test_lancer_selection_cannot_read_test(tmp_path):
    records = [select("lancer", seeds=[0], dataset=toy(shift), max_history=4, results_dir=tmp_path / f"r{shift}",
                      runs_dir=tmp_path / f"runs{shift}", only=CANDIDATES) for shift in (0, 5)]
    scores = [{c: v["valid"] for c, v in r["candidates"].items()} for r in records]
    assert scores[0] == scores[1]                         # other test items, the very same selection
    assert records[0]["chosen"] == records[1]["chosen"] == max(scores[0], key=lambda c: scores[0][c][0])
    saved = json.loads((tmp_path / "r0" / "ml-100k" / "cap4" / "lancer" / "selection.json").read_text())
    assert saved["rule"].startswith("highest mean validation NDCG@10") and set(saved["candidates"]) == set(CANDIDATES)
    assert not (tmp_path / "r0" / "ml-100k" / "cap4" / "lancer" / "test.json").exists()
    tested = evaluate_chosen("lancer", toy(), max_history=4, results_dir=tmp_path / "r0", runs_dir=tmp_path / "runs0")
    assert tested["candidate"] == saved["chosen"] and len(tested["seeds"]["0"]["ranks"]) == 40


def test_select_refuses_to_rerun_after_its_record_and_test_needs_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `lancer select` first"):
        evaluate_chosen("sasrec", toy(), max_history=4, results_dir=tmp_path, runs_dir=tmp_path)


def record(model: str, config: dict, mean: float = 0.1, max_history: int = 4) -> dict:
    return {"model": model, "chosen": "only", "rule": "test", "seeds": [0], "max_history": max_history,
            "candidates": {"only": {"config": config, "valid": [mean], "valid_mean": mean, "valid_std": None}}}


def test_main_job_runs_the_selected_configurations(tmp_path):
    sel = tmp_path / "selection"
    lancer = {"model": LANCER["model"] | {"label_smoothing": 0.3}, "train": LANCER["train"]}
    write_json(sel / "lancer" / "selection.json", record("lancer", lancer))
    for name in ("sasrec", "gru4rec", "narm"):
        write_json(sel / name / "selection.json", record(name, {"model": {"n_embd": 8}, "train": {"epochs": 1}}))
    write_json(sel / "pop" / "selection.json", record("pop", {"model": {}, "train": {}}))   # as `lancer select` writes it
    table = main_job(toy(), tmp_path / "out", selection_dir=sel, backbone_config=TINY)
    out = tmp_path / "out"
    summary = json.loads((out / "lancer" / "metrics.json").read_text())
    assert summary["model_config"]["label_smoothing"] == 0.3                      # LANCER ran the chosen configuration
    details = json.loads((out / "baselines" / "sasrec" / "baselines_details.json").read_text())
    assert details["models"]["sasrec"]["config"]["n_embd"] == 8 and details["models"]["sasrec"]["epochs_run"] == 1
    assert json.loads((out / "selection.json").read_text())["lancer"]["chosen"] == "only"
    ranks = json.loads((out / "ranks.json").read_text())
    assert set(ranks) == {"pop", "sasrec", "gru4rec", "narm", "lancer"} and all(len(r) == 40 for r in ranks.values())
    saved = pd.read_csv(out / "results.csv", index_col=0)
    assert {"ndcg@10 ci_low", "ndcg@10 diff", "ndcg@10 verdict"} <= set(saved.columns)
    assert table.loc["lancer", "ndcg@10 ci_low"] <= table.loc["lancer", "ndcg@10"] <= table.loc["lancer", "ndcg@10 ci_high"]
    with pytest.raises(ValueError, match="best validation mean"):
        chosen_config(record("lancer", lancer) | {"chosen": "other"} | {"candidates": {
            "only": {"config": lancer, "valid_mean": 0.1}, "other": {"config": lancer, "valid_mean": 0.05}}})


def test_main_job_refuses_records_of_different_history_caps(tmp_path):
    sel = tmp_path / "selection"
    write_json(sel / "lancer" / "selection.json", record("lancer", LANCER))
    write_json(sel / "sasrec" / "selection.json", record("sasrec", {"model": {}, "train": {}}, max_history=50))
    with pytest.raises(ValueError, match=r"different history caps: \[4, 50\]"):
        main_job(toy(), tmp_path / "out", selection_dir=sel, backbone_config=TINY)


def test_best_folder_opens_with_from_pretrained_and_has_a_model_card(tmp_path):
    from lancer.model import LancerModel
    summary = train_lancer(toy(), tmp_path / "run", **model_kwargs(LANCER["model"]),
                           train_config=TrainConfig(**LANCER["train"]), command="lancer train --preset item-tokens")
    model = LancerModel.from_pretrained(tmp_path / "run" / "best")
    assert len(model.texts) == 12
    card = (tmp_path / "run" / "best" / "README.md").read_text()
    assert f"| test ndcg@10 | {summary['lancer']['ndcg@10']:.4f} |" in card
    assert "`lancer train --preset item-tokens`" in card and "| data fingerprint |" in card and "| seed | 0 |" in card


def test_comparison_pairs_the_seeds_every_model_has(tmp_path):
    from lancer.selection import comparison
    where = tmp_path / "ml-100k" / "cap10"
    rng = np.random.default_rng(0)
    for model, seeds, mean in (("pop", [0, 1, 2], 0.05), ("sasrec", [0, 1, 2, 3, 4], 0.1), ("lancer", [0, 1, 2, 3], 0.2)):
        write_json(where / model / "test.json", {"model": model, "candidate": "only", "valid_mean": mean, "seeds": {
            str(s): {"ranks": rng.integers(1, 30, 50).tolist()} for s in seeds}})
    table = comparison("ml-100k", 10, tmp_path)
    assert table["seeds"].tolist() == [3, 3, 3]                               # 0, 1, 2: the seeds all three share
    assert pd.isna(table.loc["sasrec", "verdict"])                            # the reference (best validation)
    write_json(where / "narm" / "test.json", {"model": "narm", "candidate": "only", "valid_mean": 0.0,
                                             "seeds": {"7": {"ranks": [1] * 50}}})
    with pytest.raises(ValueError, match="share no seed"):
        comparison("ml-100k", 10, tmp_path)


def test_lab_studies_read_the_selected_lancer_without_training(tmp_path):
    "The lab's standard-protocol studies rank with the selection's trained LANCER: untouched, they give back its test ranks."
    from lancer.lab.ablation import selected_history_lengths, selected_template_robustness, selected_template_table
    kw = dict(max_history=4, results_dir=tmp_path / "r", runs_dir=tmp_path / "runs")
    select("lancer", seeds=[0], dataset=toy(), only={"plain": LANCER}, **kw)
    tested = evaluate_chosen("lancer", toy(), **kw)["seeds"]["0"]["ranks"]
    perturbations = {"as trained": {}, "separator ' ; '": {"separator": " ; "}}
    out = selected_template_robustness(toy(), seeds=[0], perturbations=perturbations, output_dir=tmp_path / "t", **kw)
    assert json.loads((out / "seed0.json").read_text())["ranks"]["as trained"] == tested
    table = selected_template_table(out)
    assert list(table.index) == list(perturbations) and table.loc["as trained", "vs as trained"] == "reference"
    lengths = selected_history_lengths(toy(), seeds=[0], lengths=(1, 4), output_dir=tmp_path / "h", **kw)
    assert json.loads((lengths / "lancer" / "seed0.json").read_text())["ranks"]["4"] == tested     # L = the cap


def test_candidates_at_cap_10_are_the_ones_the_recorded_selections_ran():
    "Defining candidates per history cap changed no cap-10 candidate: each equals the configuration its record ran."
    from pathlib import Path
    from lancer.selection import candidates
    root = Path(__file__).parents[1] / "results/selection/ml-100k/cap10"
    for model in ("lancer", "sasrec", "gru4rec", "narm"):
        record = json.loads((root / model / "selection.json").read_text())
        now = candidates(model, 10)
        assert list(record["candidates"]) == list(now), model
        for name, c in record["candidates"].items():                   # fields added since: at their defaults
            assert _filled(model, c["config"]) == now[name], (model, name)


def test_a_run_on_disk_is_reused_only_for_its_own_configuration(tmp_path):
    where, older = tmp_path / "results", json.loads(json.dumps(CANDIDATES["plain"]))
    del older["train"]["optim"]                                          # recorded before that field existed
    write_json(where / "plain" / "seed0.json", {"config": older, "valid_ndcg@10": 0.5})
    write_json(where / "smoothed" / "seed0.json", {"config": CANDIDATES["plain"], "valid_ndcg@10": 0.5})
    run = lambda name: run_candidate("lancer", name, CANDIDATES[name], 0, toy(), None, 4, where, tmp_path / "runs")
    assert run("plain")["valid_ndcg@10"] == 0.5                         # the same configuration: not trained again
    with pytest.raises(ValueError, match="another configuration"):
        run("smoothed")
