"Tests for lancer.backbone (tiny configs, offline)."
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lancer.backbone import BackboneError, as_cache, load_backbone, text_position_ids
from lancer.offline_backbone import OfflineBackboneConfig, build_offline_backbone, pretraining_table, train_tokenizer

TEXTS = ["Animation, Children's, Comedy : Toy Story (1995)", "Action, Adventure, Thriller : GoldenEye (1995)",
         "Thriller : Four Rooms (1995)", "Action, Comedy, Drama : Get Shorty (1995)",
         "Crime, Drama, Thriller : Copycat (1995)", "Drama : Twelve Monkeys (1995)", "Romance : Amélie (2001)",
         "genres : Comedy year : 1995 title : Toy Story (1995)", "genres : Thriller year : 1995 title : Four Rooms (1995)",
         "genres : Drama year : 1995 title : Twelve Monkeys (1995)", "Sci-Fi : Brazil (1985)", "Drama : Heat (1995)"]
TINY = OfflineBackboneConfig(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=300, block_size=32,
                             epochs=2, batch_size=4, lr=3e-3)


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    return build_offline_backbone(TEXTS, TINY, tmp_path_factory.mktemp("bb") / "tiny", device="cpu")


def test_tokenizer_round_trip():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    for text in TEXTS + ["unseen wörds ✓ 123"]:
        assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.eos_token == tok.pad_token == tok.bos_token == "<|endoftext|>"
    assert len(tok) <= 300


def test_tokenizer_truncation_and_padding():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    enc = tok(TEXTS[:3], truncation=True, max_length=5, padding=True, return_tensors="pt")
    assert enc["input_ids"].shape == (3, 5)
    enc = tok(TEXTS[:3], padding=True, return_tensors="pt")
    assert (enc["input_ids"][enc["attention_mask"] == 0] == tok.pad_token_id).all()


def test_pretraining_table_packs_all_tokens():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    table = pretraining_table(TEXTS, tok, block_size=16)
    blocks = table["input_ids"]
    assert all(len(b) == 16 for b in blocks[:-1])
    assert sum(map(len, blocks)) == sum(len(x) + 1 for x in tok(TEXTS)["input_ids"])


def test_build_and_load_identical_logits(tiny_backbone):
    lm, tok = load_backbone(tiny_backbone)
    assert lm.config.n_layer == 2 and lm.config.n_embd == 32
    assert (tiny_backbone / "model.safetensors").exists()
    report = json.loads((tiny_backbone / "offline_backbone.json").read_text())
    assert report["losses"][-1] < report["losses"][0]
    batch = tok(TEXTS[:4], return_tensors="pt", padding=True)
    with torch.no_grad():
        a = lm(**batch).logits
        b = load_backbone(str(tiny_backbone))[0](**batch).logits
    assert torch.equal(a, b)
    assert tok.pad_token_id == lm.config.pad_token_id


def test_unknown_name_raises_backbone_error():
    with pytest.raises(BackboneError, match="offline"):
        load_backbone("no-such-org/no-such-model-xyz")
    with pytest.raises(BackboneError, match="build_offline_backbone"):
        load_backbone("offline")


def test_as_cache_masked_prefix_is_invisible():
    lm = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=32,
                                    bos_token_id=0, eos_token_id=0)).eval()
    B, P, T = 2, 4, 6
    prefix = [(torch.randn(B, 2, P, 16), torch.randn(B, 2, P, 16)) for _ in range(2)]
    ids, mask = torch.randint(0, 100, (B, T)), torch.ones(B, T, dtype=torch.long)
    pos = text_position_ids(mask)
    with torch.no_grad():
        plain = lm(ids, attention_mask=mask).logits
        hidden = lm(ids, cache=as_cache(prefix), attention_mask=torch.cat([torch.zeros(B, P, dtype=torch.long), mask], 1),
                    position_ids=pos).logits
        seen = lm(ids, cache=as_cache(prefix), attention_mask=torch.cat([torch.ones(B, P, dtype=torch.long), mask], 1),
                  position_ids=pos).logits
    assert torch.allclose(hidden, plain, atol=1e-5)
    assert not torch.allclose(seen, plain, atol=1e-3)


def test_text_position_ids_left_and_right_padding():
    got = text_position_ids(torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]]))
    assert got.tolist() == [[0, 1, 2, 2], [0, 0, 0, 1]]


def test_sequence_corpus_uses_only_training_parts():
    "With sequences, the corpus writes the training parts as LANCER prompts; validation and test items never appear."
    import numpy as np
    from lancer.training import rule_dataset
    from lancer.protocol import leave_one_out, template_for
    from lancer.offline_backbone import backbone_corpus
    ds = rule_dataset(n_users=2, n_items=12, length=6)
    ds.sequences = [np.arange(6), np.arange(6, 12)]
    ds.name = "ml-100k"
    split = leave_one_out(ds, max_history=4)
    template = template_for("ml-100k")
    plain = backbone_corpus(ds, template)
    texts = backbone_corpus(ds, template, split.train, window=5)
    seq_texts = texts[len(plain):]
    assert len(seq_texts) == 2 and all(t.startswith(template.opener) for t in seq_texts)
    display = template.display_strings(ds.items)
    held_out = [display[i] for i in (4, 5, 10, 11)]
    assert not any(h in t for h in held_out for t in seq_texts)
    assert all(display[i] in seq_texts[0] for i in range(4))
