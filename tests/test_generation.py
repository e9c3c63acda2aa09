"Tests for lancer.generation: beam search from a per-user key/value prefix."
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from lancer.generation import cut, generate, left_pad, position_ids, prefix_from_text

MOVIES = ["Comedy : Toy Story (1995)", "Drama : Heat (1995)", "Thriller : Se7en (1995)", "Action : Speed (1994)",
          "Comedy : Clueless (1995)", "Drama : Casino (1995)", "Animation : Balto (1995)"]
OPENER, SEP = "A user watched: ", " -> "


def seq(ids): return OPENER + SEP.join(MOVIES[i] for i in ids)


@pytest.fixture(scope="module")
def tok():
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    texts = [seq([i, (i + 1) % 7, (i + 3) % 7]) for i in range(7)] + MOVIES
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def lm(tok):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2, initializer_range=0.2,
                     eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return GPT2LMHeadModel(cfg).eval()


PREFIX_TEXTS = [seq([0, 1]), seq([2]), seq([3, 4, 5])]
PROMPTS = [" -> Drama : Heat (1995) -> ", " -> Comedy : Clueless (1995) -> Action : Speed (1994) -> ", " -> "]


def reference(lm, tok, text, prompt, num_beams):
    "transformers alone: the full text with positions 0..n-1, 0..m-1 (prefix positions, then the prompt from 0)."
    ids = tok(text + prompt.rstrip(), return_tensors="pt").input_ids
    n, m = len(tok(text).input_ids), len(tok(prompt.rstrip()).input_ids)
    assert n + m == ids.shape[1]
    pos = torch.cat([torch.arange(n), torch.arange(m)])[None]
    out = lm.generate(ids, attention_mask=torch.ones_like(ids), position_ids=pos, num_beams=num_beams,
                      num_return_sequences=num_beams, max_new_tokens=12, do_sample=False, stop_strings=[" ->"],
                      tokenizer=tok, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return [cut(t) for t in tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]


def test_prefix_from_real_tokens_equals_full_text(lm, tok):
    prefix, mask = prefix_from_text(lm, tok, PREFIX_TEXTS)
    assert mask.sum(1).tolist() == [len(tok(t).input_ids) for t in PREFIX_TEXTS]
    got = generate(lm, tok, prefix, mask, PROMPTS, num_beams=5, max_new_tokens=12, offset_positions=True,
                   progress=False)
    full = generate(lm, tok, None, None, [t + p for t, p in zip(PREFIX_TEXTS, PROMPTS)], num_beams=5,
                    max_new_tokens=12, progress=False)
    assert got == full
    assert [len(b) for b in got] == [5, 5, 5]


def test_default_positions_restart_at_zero(lm, tok):
    prefix, mask = prefix_from_text(lm, tok, PREFIX_TEXTS)
    got = generate(lm, tok, prefix, mask, PROMPTS, num_beams=4, max_new_tokens=12, progress=False)
    assert got == [reference(lm, tok, t, p, 4) for t, p in zip(PREFIX_TEXTS, PROMPTS)]


def test_masked_prefix_slots_are_invisible(lm, tok):
    prefix, mask = prefix_from_text(lm, tok, PREFIX_TEXTS)
    batch = generate(lm, tok, prefix, mask, PROMPTS, num_beams=3, max_new_tokens=10, progress=False)
    for b, (t, p) in enumerate(zip(PREFIX_TEXTS, PROMPTS)):   # each user alone, without padded slots
        alone, amask = prefix_from_text(lm, tok, [t])
        assert amask.all()
        assert generate(lm, tok, alone, amask, [p], num_beams=3, max_new_tokens=10, progress=False) == [batch[b]]
    noisy = [(k.clone(), v.clone()) for k, v in prefix]
    pad = mask == 0
    assert pad.any()
    for k, v in noisy:
        k[pad.nonzero(as_tuple=True)[0], :, pad.nonzero(as_tuple=True)[1]] = 50.0
        v[pad.nonzero(as_tuple=True)[0], :, pad.nonzero(as_tuple=True)[1]] = -50.0
    assert generate(lm, tok, noisy, mask, PROMPTS, num_beams=3, max_new_tokens=10, progress=False) == batch
    # and a masked slot inserted in the middle of a prefix changes nothing either
    k0 = [(torch.cat([k[:1, :, :2], torch.randn_like(k[:1, :, :1]), k[:1, :, 2:]], 2),
           torch.cat([v[:1, :, :2], torch.randn_like(v[:1, :, :1]), v[:1, :, 2:]], 2)) for k, v in prefix]
    m0 = torch.cat([mask[:1, :2], torch.zeros(1, 1, dtype=mask.dtype), mask[:1, 2:]], 1)
    assert generate(lm, tok, k0, m0, PROMPTS[:1], num_beams=3, max_new_tokens=10, progress=False) == batch[:1]


def test_mini_batches_and_fresh_cache(lm, tok):
    prefix, mask = prefix_from_text(lm, tok, PREFIX_TEXTS)
    before = [(k.clone(), v.clone()) for k, v in prefix]
    a = generate(lm, tok, prefix, mask, PROMPTS, num_beams=3, max_new_tokens=8, progress=False)
    b = generate(lm, tok, prefix, mask, PROMPTS, num_beams=3, max_new_tokens=8, batch_size=2, progress=False)
    c = generate(lm, tok, prefix, mask, PROMPTS, num_beams=3, max_new_tokens=8, batch_size=1, progress=False)
    assert a == b == c
    for (k, v), (k0, v0) in zip(prefix, before):   # generate never writes into the caller's tensors
        assert k.shape == k0.shape and torch.equal(k, k0) and torch.equal(v, v0)


def test_greedy_and_token_limit(lm, tok, monkeypatch):
    prefix, mask = prefix_from_text(lm, tok, PREFIX_TEXTS)
    new_tokens, original = [], lm.generate

    def spy(*args, **kwargs):   # record how many tokens each call generated
        out = original(*args, **kwargs)
        new_tokens.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    monkeypatch.setattr(lm, "generate", spy)
    greedy = generate(lm, tok, prefix, mask, PROMPTS, greedy=True, stop=None, max_new_tokens=20, progress=False)
    assert [len(g) for g in greedy] == [1, 1, 1] and new_tokens == [20]
    for n in (1, 4):
        generate(lm, tok, prefix, mask, PROMPTS, greedy=True, stop=None, max_new_tokens=n, progress=False)
        assert new_tokens[-1] == n
    generate(lm, tok, prefix, mask, PROMPTS, num_beams=4, max_new_tokens=3, progress=False)
    assert new_tokens[-1] <= 3


def test_beam_that_writes_only_eos_is_empty(tok):
    mute = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=1))
    with torch.no_grad():
        mute.lm_head.weight.zero_()
        mute.lm_head.weight[tok.eos_token_id] = 1.0
        mute.transformer.ln_f.bias.fill_(1.0)
    assert generate(mute, tok, None, None, ["Drama : Heat (1995) -> "] * 2, greedy=True, progress=False) == [[""], [""]]
    beams = generate(mute, tok, None, None, ["Drama : Heat (1995) -> "], num_beams=3, progress=False)
    assert beams[0][0] == "" and len(beams[0]) == 3


def test_training_mode_restored_and_no_grad(lm, tok):
    lm.train()
    try:
        prefix, mask = prefix_from_text(lm.eval(), tok, PREFIX_TEXTS[:1])
        lm.train()
        generate(lm, tok, prefix, mask, PROMPTS[:1], num_beams=2, max_new_tokens=3, progress=False)
        assert lm.training
    finally:
        lm.eval()


def test_left_pad_and_positions(tok):
    ids, mask = left_pad(tok, ["Drama : Heat (1995) -> ", "Comedy -> "])
    assert ids.shape == mask.shape and mask[0].all() and not mask[1].all()
    assert mask[1].tolist() == sorted(mask[1].tolist())                 # zeros first: left padding
    assert tok.decode(ids[1][mask[1].bool()]) == "Comedy ->"            # trailing whitespace removed
    pmask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    pos = position_ids(pmask, mask)
    assert pos[1][mask[1].bool()].tolist() == list(range(int(mask[1].sum())))
    off = position_ids(pmask, mask, offset_positions=True)
    assert off[0][0].item() == 2 and off[1][mask[1].bool()][0].item() == 1


def test_cut():
    assert cut("Drama : Heat (1995) -> Comedy : Toy") == "Drama : Heat (1995)"
    assert cut("  Heat  ") == "Heat"
    assert cut("") == ""
    assert cut("a -> b", stop=None) == "a -> b"


def test_bad_inputs(lm, tok):
    prefix, mask = prefix_from_text(lm, tok, PREFIX_TEXTS[:2])
    with pytest.raises(ValueError, match="prefix_mask has shape"):
        generate(lm, tok, prefix, mask[:1], PROMPTS[:2], progress=False)
    with pytest.raises(ValueError, match="prefix layer 0 key"):
        generate(lm, tok, [(k[:, :, :1], v) for k, v in prefix], mask, PROMPTS[:2], progress=False)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(lm, tok, prefix, mask, ["Heat ->", "  "], progress=False)
    with pytest.raises(ValueError, match=r"prompts \[1\]: prompt \+ 8 new tokens need more than the model's 128"):
        generate(lm, tok, None, None, ["Heat ->", seq(list(range(7)) * 3)], max_new_tokens=8, batch_size=1,
                 progress=False)


def test_prefix_dtype_and_bool_mask(lm, tok):
    prefix, mask = prefix_from_text(lm, tok, PREFIX_TEXTS[:2])
    a = generate(lm, tok, prefix, mask, PROMPTS[:2], num_beams=2, max_new_tokens=6, progress=False)
    b = generate(lm, tok, [(k.double(), v.double()) for k, v in prefix], mask.bool(), PROMPTS[:2], num_beams=2,
                 max_new_tokens=6, progress=False)
    assert a == b
