"Tests for lancer.reasoning (tiny GPT-2 config)."
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lancer.backbone import as_cache, text_position_ids
from lancer.knowledge import KnowledgePrompt, KnowledgePromptConfig
from lancer.reasoning import ReasoningAttention, ReasoningConfig

CONFIG = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0)
B, H, P = 3, 4, 5
MASK = torch.tensor([[True] * 4, [True, True, False, False], [True, False, False, False]])


@pytest.fixture
def modules():
    torch.manual_seed(0)
    return (KnowledgePrompt(CONFIG, KnowledgePromptConfig(n_prefix=P)),
            ReasoningAttention(CONFIG, ReasoningConfig(dropout=0.0)))


def test_shapes_and_weights(modules):
    know, reason = modules
    prefix, mask = reason(torch.randn(B, H, 32), MASK, know.hidden())
    assert len(prefix) == 2
    for k, v in prefix: assert k.shape == v.shape == (B, 2, H, 16)
    assert mask.shape == (B, H) and mask.dtype == torch.long and torch.equal(mask, MASK.long())
    assert reason.attn_weights.shape == (B, 2, H, P)
    assert torch.allclose(reason.attn_weights.sum(-1), torch.ones(B, 2, H))


def test_other_widths():
    reason = ReasoningAttention(CONFIG, ReasoningConfig(d_attn=12, n_head=3), d_item=7, d_knowledge=9)
    prefix, _ = reason(torch.randn(B, H, 7), MASK, torch.randn(P, 9))
    assert prefix[1][0].shape == (B, 2, H, 16)
    with pytest.raises(ValueError, match="divisible"):
        ReasoningAttention(CONFIG, ReasoningConfig(d_attn=10, n_head=3))
    with pytest.raises(ValueError, match="item_mask"):
        reason(torch.randn(B, H, 7), MASK[:, :2], torch.randn(P, 9))


def test_no_shared_parameters(modules):
    know, reason = modules
    assert not ({id(p) for p in know.parameters()} & {id(p) for p in reason.parameters()})


def test_padded_slots_zero_and_irrelevant(modules):
    know, reason = modules
    items = torch.randn(B, H, 32)
    with torch.no_grad():
        prefix, _ = reason(items, MASK, know.hidden())
        changed = items.clone()
        changed[~MASK] = torch.randn(int((~MASK).sum()), 32) * 100
        changed[2, 3] = float("nan")
        prefix2, _ = reason(changed, MASK, know.hidden())
    for (k, v), (k2, v2) in zip(prefix, prefix2):
        assert torch.equal(k, k2) and torch.equal(v, v2)
        assert (k.transpose(1, 2)[~MASK] == 0).all() and (v.transpose(1, 2)[~MASK] == 0).all()


def test_masked_slots_invisible_to_lm(modules):
    know, reason = modules
    lm = GPT2LMHeadModel(CONFIG).eval()
    with torch.no_grad():
        prefix, pmask = reason(torch.randn(B, H, 32), MASK, know.hidden())
        ids, tmask = torch.randint(0, 100, (B, 5)), torch.ones(B, 5, dtype=torch.long)
        full = lm(ids, cache=as_cache(prefix), attention_mask=torch.cat([pmask, tmask], 1),
                  position_ids=text_position_ids(tmask)).logits
        one = lm(ids[2:], cache=as_cache([(k[2:, :, :1], v[2:, :, :1]) for k, v in prefix]),
                 attention_mask=torch.ones(1, 6, dtype=torch.long), position_ids=text_position_ids(tmask[2:])).logits
    assert torch.allclose(full[2], one[0], atol=1e-5)


def test_gradient_flows_to_items_and_knowledge(modules):
    know, reason = modules
    items = torch.randn(B, H, 32, requires_grad=True)
    prefix, _ = reason(items, MASK, know.hidden())
    sum(k.pow(2).sum() + v.pow(2).sum() for k, v in prefix).backward()
    assert items.grad[MASK].abs().sum(-1).gt(0).all()
    assert items.grad[~MASK].abs().sum() == 0
    assert know.embedding.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in reason.parameters())
