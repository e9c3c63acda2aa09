"Tests for lancer.knowledge (tiny GPT-2, random weights)."
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lancer.offline_backbone import train_tokenizer
from lancer.knowledge import (KnowledgePrompt, KnowledgePromptConfig, encode_items, freeze, item_representations,
                              knowledge_batch, knowledge_loss, knowledge_tokens)

TEXTS = ["Comedy : Toy Story (1995)", "Thriller : Four Rooms (1995)", "Drama : Twelve Monkeys (1995)",
         "genres : Comedy year : 1995 title : Toy Story (1995)", "genres : Drama year : 1995 title : Heat (1995)"] * 2
PAIRS = [("genres : Animation, Comedy year : 1995 title : ", "Toy Story (1995)"),
         ("genres : Thriller year : 1995 title : ", "Four Rooms (1995)"),
         ("genres : Drama year : 1995 title : ", "Twelve Monkeys (1995)")]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    tok = train_tokenizer(TEXTS, vocab_size=300)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=64,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    lm = freeze(GPT2LMHeadModel(config)).eval()
    prompt = KnowledgePrompt(config, KnowledgePromptConfig(n_prefix=4, dropout=0.0))
    return tok, lm, prompt, knowledge_batch(*knowledge_tokens(tok, PAIRS), tok.pad_token_id)


def test_prompt_shapes(setup):
    _, lm, prompt, _ = setup
    prefix = prompt(3)
    assert len(prefix) == 2
    for k, v in prefix: assert k.shape == v.shape == (3, 2, 4, 16)
    assert prompt.hidden().shape == (4, 32)
    assert KnowledgePrompt(lm.config, KnowledgePromptConfig(d_mlp=8)).hidden().shape == (20, 8)


def test_knowledge_batch_target_mask(setup):
    tok, _, _, batch = setup
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == lengths.max()                   # dynamic padding
    assert (batch["attention_mask"][:, :1] == 1).all()                     # right padding
    for i, (c, t) in enumerate(PAIRS):
        target = batch["labels"][i] != -100
        assert tok.decode(batch["input_ids"][i][target]) == " " + t + tok.eos_token
        assert tok.decode(batch["input_ids"][i][batch["attention_mask"][i].bool() & ~target]) == c.rstrip()


def test_knowledge_tokens_truncation_keeps_target(setup):
    tok = setup[0]
    long = [("genres : " + "Drama, " * 50 + "title : ", "Heat (1995)")]
    rows, target_lens = knowledge_tokens(tok, long, max_tokens=20)
    assert len(rows[0]) == 20 and tok.decode(rows[0][:3]) == tok.decode(knowledge_tokens(tok, long)[0][0][:3])
    assert tok.decode(rows[0][-target_lens[0]:]) == " Heat (1995)" + tok.eos_token
    rows, target_lens = knowledge_tokens(tok, [("genres : Drama title : ", "Heat " * 40)], max_tokens=12)
    assert (len(rows[0]), target_lens[0], rows[0][-1]) == (12, 11, tok.eos_token_id)   # a cut title, one context token


def test_gradients_only_reach_prompt(setup):
    _, lm, prompt, batch = setup
    prompt.zero_grad()
    loss = knowledge_loss(lm, prompt, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in lm.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prompt.parameters())


def test_position_overflow_is_a_clear_error(setup):
    _, lm, prompt, _ = setup
    batch = lambda n: {"input_ids": torch.zeros(1, n, dtype=torch.long), "attention_mask": torch.ones(1, n, dtype=torch.long),
                       "labels": torch.zeros(1, n, dtype=torch.long)}
    with pytest.raises(ValueError, match="positions"):
        knowledge_loss(lm, prompt, batch(65))
    knowledge_loss(lm, prompt, batch(64))                               # P + 64 > 64 is fine: the prefix has no position


def test_item_representations(setup):
    tok, lm, prompt, batch = setup
    with torch.no_grad():
        reps = {m: item_representations(lm, prompt, batch["input_ids"], batch["attention_mask"], m)
                for m in ("last", "mean", "published")}
        for r in reps.values(): assert r.shape == (3, 32)
        assert torch.equal(reps["published"][0], reps["published"][2])   # defect 1: identical for every item
        assert not torch.allclose(reps["last"][0], reps["last"][1])
        alone = knowledge_batch(*knowledge_tokens(tok, PAIRS[2:]), tok.pad_token_id)
        for m in ("last", "mean"):
            got = item_representations(lm, prompt, alone["input_ids"], alone["attention_mask"], m)[0]
            assert torch.allclose(got, reps[m][2], atol=1e-5)
        loss, table = encode_items(lm, prompt, *knowledge_tokens(tok, PAIRS), tok.pad_token_id, bucket_size=1)
        assert torch.allclose(table, reps["last"], atol=1e-5)
        assert torch.allclose(loss, knowledge_loss(lm, prompt, batch), atol=1e-5)   # buckets weighted by their tokens
    with pytest.raises(ValueError, match="mode"):
        item_representations(lm, prompt, batch["input_ids"], batch["attention_mask"], "first")
    r = item_representations(lm, prompt, batch["input_ids"], batch["attention_mask"])
    prompt.zero_grad(); r.sum().backward()
    assert prompt.embedding.weight.grad.abs().sum() > 0


def test_pool_hidden_matches_item_representations(setup):
    "The body's last hidden state is the full LM's last `hidden_states` (after the final layer norm)."
    from lancer.backbone import as_cache, text_position_ids
    from lancer.knowledge import pool_hidden
    _, lm, prompt, batch = setup
    with torch.no_grad():
        full_mask = torch.cat([torch.ones(3, prompt.n_prefix, dtype=torch.long), batch["attention_mask"]], 1)
        out = lm(input_ids=batch["input_ids"], attention_mask=full_mask, cache=as_cache(prompt(3)), use_cache=False,
                 position_ids=text_position_ids(batch["attention_mask"]), output_hidden_states=True)
        for m in ("last", "mean"):
            want = item_representations(lm, prompt, batch["input_ids"], batch["attention_mask"], m)
            assert torch.allclose(pool_hidden(out.hidden_states[-1], batch["attention_mask"], m), want, atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt_neox", "llama_gqa"])
def test_other_backbones_load_and_take_prefixes(setup, tmp_path, arch):
    "Any causal LM saved locally loads through load_backbone and works with both prompts (rotary, grouped KV heads)."
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM
    from lancer.backbone import as_cache, load_backbone
    from lancer.reasoning import ReasoningAttention
    tok = setup[0]
    if arch == "gpt_neox":
        model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             num_key_value_heads=1, intermediate_size=64, max_position_embeddings=64))
    model.save_pretrained(tmp_path); tok.save_pretrained(tmp_path)
    lm, tok2 = load_backbone(tmp_path)
    freeze(lm)
    prompt = KnowledgePrompt(lm.config, KnowledgePromptConfig(n_prefix=3))
    batch = knowledge_batch(*knowledge_tokens(tok2, PAIRS), tok2.pad_token_id)
    loss = knowledge_loss(lm, prompt, batch)
    loss.backward()
    assert torch.isfinite(loss) and prompt.embedding.weight.grad.abs().sum() > 0
    reps = item_representations(lm, prompt, batch["input_ids"], batch["attention_mask"])
    prefix, pmask = ReasoningAttention(lm.config)(reps[None], torch.tensor([[True, True, False]]), prompt.hidden())
    logits = lm(input_ids=batch["input_ids"][:1], attention_mask=torch.cat([pmask, batch["attention_mask"][:1]], 1),
                cache=as_cache(prefix)).logits
    assert logits.shape[:2] == batch["input_ids"][:1].shape
