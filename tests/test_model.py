"Tests for lancer.model: shapes of every piece, which parameters learn in each stage, exact-string mapping, bad input."
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from lancer.offline_backbone import OfflineBackboneConfig
from lancer.knowledge import knowledge_batch
from lancer.model import ItemTexts, LancerConfig, Switches, TextHead, history_tensor, sequence_batch
from lancer.recommend import display_mapper, recommend
from lancer.pipeline import build_model
from lancer.protocol import leave_one_out, training_examples
from lancer.training import rule_dataset

H, P, L, NH, D = 4, 3, 2, 2, 32          # history slots, prefix positions, layers, heads, width


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    "A tiny LANCER model over the 12-item synthetic catalogue (offline backbone: 2 layers, width 32, 1 epoch)."
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds = rule_dataset(n_users=8)
    ds.name = "ml-100k"                                                  # borrow the MovieLens template
    split = leave_one_out(ds, max_history=H)
    model = build_model(ds, "offline", LancerConfig(n_prefix=P, max_history=H, attn_heads=2, prompt_dropout=0.0),
                        OfflineBackboneConfig(n_layer=L, n_embd=D, n_head=NH, vocab_size=400, epochs=1, batch_size=16),
                        cache_dir=tmp_path_factory.mktemp("cache"))
    return ds, split, model


def test_item_texts(setup):
    ds, _, model = setup
    texts = model.texts
    assert isinstance(texts, ItemTexts)
    assert len(texts) == len(texts.display) == len(texts.display_ids) == len(texts.knowledge_ids) == ds.n_items
    assert texts.display[0] == texts.template.display_string(ds.items.iloc[0].to_dict())
    for i in range(ds.n_items):
        assert model.tokenizer.decode(texts.display_ids[i]) == " " + texts.display[i]
        assert texts.knowledge_ids[i][-1] == model.tokenizer.eos_token_id
        assert 0 < texts.knowledge_target_len[i] <= len(texts.knowledge_ids[i])


def test_knowledge_batch_shapes(setup):
    _, _, model = setup
    b = knowledge_batch(*model.texts.knowledge([0, 3, 5]), model.pad_id)
    T = max(len(model.texts.knowledge_ids[i]) for i in (0, 3, 5))
    for k in ("input_ids", "attention_mask", "labels"): assert b[k].shape == (3, T), k
    for row, i in enumerate((0, 3, 5)):
        n = model.texts.knowledge_target_len[i]
        real = b["labels"][row][b["labels"][row] != -100]
        assert len(real) == n                                               # the title + eos only
        title = model.tokenizer.decode(real[:-1])
        assert title.strip() == model.texts.template.knowledge_text(model.texts.items.iloc[i].to_dict())[1]


def test_sequence_batch_shapes(setup):
    _, split, model = setup
    examples = training_examples(split)[:5]
    b = sequence_batch(model.texts, examples, H, model.pad_id)
    B, T = b["input_ids"].shape
    assert B == 5 and b["attention_mask"].shape == b["labels"].shape == (B, T)
    assert b["history"].shape == b["history_mask"].shape == (B, H)
    assert b["history_mask"].dtype == torch.bool
    for row, ex in enumerate(examples):
        assert b["history_mask"][row].sum() == min(len(ex.history), H)
        target = b["labels"][row][b["labels"][row] != -100]
        assert target.tolist() == model.texts.display_ids[ex.target] + [model.tokenizer.eos_token_id]
    everything = sequence_batch(model.texts, examples, H, model.pad_id, TextHead(loss_on="all"))
    assert ((everything["labels"] != -100) == everything["attention_mask"].bool()).all()


def test_history_tensor_keeps_last_items():
    ids, mask = history_tensor([[1, 2, 3, 4, 5, 6], [7]], 4)
    assert ids.tolist() == [[3, 4, 5, 6], [7, 0, 0, 0]]
    assert mask.tolist() == [[True] * 4, [True, False, False, False]]


def test_encode_items_and_user_prefix_shapes(setup):
    _, _, model = setup
    model.eval()
    loss, reps = model.encode_items(torch.tensor([0, 1, 2, 7]))
    assert loss.shape == () and torch.isfinite(loss)
    assert reps.shape == (4, D)
    history, mask = history_tensor([[0, 1, 2], [4, 5, 6, 7], [9]], H)
    prefix, prefix_mask, kloss, weights = model.user_prefix(history, mask)
    assert len(prefix) == L
    for k, v in prefix: assert k.shape == v.shape == (3, NH, H, D // NH)
    assert prefix_mask.shape == (3, H) and prefix_mask.tolist()[2] == [1, 0, 0, 0]
    assert kloss.shape == ()
    assert weights.shape == (3, 2, H, P)                                  # [B, attn heads, H, P]
    assert torch.allclose(weights.sum(-1), torch.ones(3, 2, H))
    for k, v in prefix: assert (k[2, :, 1:] == 0).all() and (v[2, :, 1:] == 0).all()   # padded slots are zero
    # precomputed catalogue representations give the same prefix, and no knowledge loss
    _, all_reps = model.encode_items(torch.arange(len(model.texts)))
    prefix2, _, kloss2, _ = model.user_prefix(history, mask, all_reps)
    assert kloss2 is None
    for (k, v), (k2, v2) in zip(prefix, prefix2):
        torch.testing.assert_close(k, k2, atol=1e-5, rtol=1e-4); torch.testing.assert_close(v, v2, atol=1e-5, rtol=1e-4)


def test_forward_losses_and_stage_gradients(setup):
    _, split, model = setup
    batch = sequence_batch(model.texts, training_examples(split)[:4], H, model.pad_id)
    for stage in (1, 2):
        model.set_stage(stage)
        model.train()
        model.zero_grad(set_to_none=True)
        out = model(**batch)
        assert set(out) == {"loss", "sequence_loss", "knowledge_loss"}
        for v in out.values(): assert v.shape == () and torch.isfinite(v)
        torch.testing.assert_close(out["loss"].detach(), out["sequence_loss"] + out["knowledge_loss"])
        out["loss"].backward()
        got = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert got == ({"knowledge_prompt", "reasoning"} if stage == 1 else {"knowledge_prompt", "reasoning", "lm"}), stage
        assert all(p.grad is None for p in model.knowledge_lm.parameters())
        assert all(p.requires_grad == (stage == 2) for p in model.lm.parameters())
        assert not any(p.requires_grad for p in model.knowledge_lm.parameters())
        if stage == 1: assert not model.lm.training                         # frozen LM: no dropout in stage 1
    model.zero_grad(set_to_none=True)
    model.set_stage(1)
    model.eval()
    with pytest.raises(ValueError, match="stage"): model.set_stage(3)


def test_display_mapper_exact_string(setup):
    ds, _, model = setup
    mapper = display_mapper(model)
    ids, scores = mapper.map(model.texts.display)
    assert list(ids) == list(range(ds.n_items))
    assert all(abs(float(s) - 1.0) < 1e-4 for s in scores)


def test_empty_history_is_a_clear_error(setup):
    _, _, model = setup
    with pytest.raises(ValueError, match="at least one history item"): history_tensor([[]], H)
    with pytest.raises(ValueError, match="at least one history item"): recommend(model, [[]], progress=False)
    with pytest.raises(ValueError, match="at least one history item"): recommend(model, [[1, 2], []], progress=False)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="item_repr"): Switches(item_repr="first")
    with pytest.raises(ValueError, match="loss_on"): TextHead(loss_on="some")
    with pytest.raises(ValueError, match="item_encoder"): LancerConfig(item_encoder="bert")
    with pytest.raises(TypeError): LancerConfig(item_tokens="instead")          # the head is an object, not a field


def test_fresh_model_does_not_depend_on_the_backbone_cache(tmp_path):
    "The prompts start from the same weights whether the offline backbone was just built or came from the cache."
    ds = rule_dataset(n_users=8)
    ds.name = "ml-100k"
    args = (ds, "offline", LancerConfig(n_prefix=P, max_history=H, attn_heads=2),
            OfflineBackboneConfig(n_layer=L, n_embd=D, n_head=NH, vocab_size=400, epochs=1, batch_size=16))
    built = build_model(*args, cache_dir=tmp_path, seed=3)                  # builds the backbone (uses the RNG)
    cached = build_model(*args, cache_dir=tmp_path, seed=3)                 # loads it from the cache
    other = build_model(*args, cache_dir=tmp_path, seed=4)
    for name, p in built.knowledge_prompt.state_dict().items():
        torch.testing.assert_close(cached.knowledge_prompt.state_dict()[name], p)
    assert not torch.equal(other.reasoning.w_q.weight, built.reasoning.w_q.weight)


def test_config_is_the_architecture_and_variants_are_objects():
    "LancerConfig holds the architecture only; the output head and the published/ablation switches are objects of their own."
    from dataclasses import fields
    from lancer.checkpoints import HEAD_OPTIONS, model_options, model_parts
    from lancer.item_tokens import ItemTokenHead
    architecture = {f.name for f in fields(LancerConfig)}
    assert len(architecture) <= 10
    assert not architecture & ({f.name for f in fields(Switches)} | set(HEAD_OPTIONS))
    parts = (LancerConfig(n_prefix=8), ItemTokenHead("after", label_smoothing=0.2, init="minilm"), Switches(shared_kv=True))
    assert model_parts(model_options(*parts)) == parts
    with pytest.raises(ValueError, match="unknown model options"): model_parts({"item_tokens": "none", "heads": 2})
