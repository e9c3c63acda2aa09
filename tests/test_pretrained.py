"""Pretrained backbones without the hub (notebook 04): a packaged GGUF is checked, converted once into a plain Hugging
Face folder and loaded like any backbone; a missing package or a wrong file is refused by name; and LANCER runs on
Llama- and Gemma-architecture LMs (grouped key/value heads, no `n_positions`) through both stages and every decoding."""
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from lancer.backbone import BackboneError, PackagedBackbone, load_backbone, packaged_backbone_path
from lancer.offline_backbone import train_tokenizer
from lancer.mapping import EmbeddingMapper, hidden_state_encoder
from lancer.model import ItemTexts, LancerConfig, LancerModel, TextHead
from lancer.item_tokens import ItemTokenHead
from lancer.recommend import DECODINGS, recommend
from lancer.protocol import leave_one_out, template_for
from lancer.training import TrainConfig, rule_dataset
from lancer.trainer import train


def byte_symbols() -> list[str]:
    "GPT-2's printable stand-ins for the 256 bytes (the vocabulary of a byte-level BPE without merges)."
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs: bs.append(b); cs.append(256 + n); n += 1
    return [chr(c) for c in cs]


def write_tiny_llama_gguf(path: Path, d: int = 16, layers: int = 2, heads: int = 2, kv_heads: int = 1, ff: int = 32) -> Path:
    "A tiny Llama in GGUF (float32 tensors, a byte-level BPE tokenizer), written with the `gguf` package."
    import gguf
    rng = np.random.default_rng(0)
    tokens = byte_symbols() + ["<|endoftext|>"]
    V, hd = len(tokens), d // heads
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(1024); w.add_embedding_length(d); w.add_block_count(layers); w.add_feed_forward_length(ff)
    w.add_rope_dimension_count(hd); w.add_head_count(heads); w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5); w.add_vocab_size(V)
    w.add_tokenizer_model("gpt2"); w.add_token_list(tokens); w.add_token_types([1] * (V - 1) + [3])
    w.add_token_scores([0.0] * V); w.add_token_merges([]); w.add_bos_token_id(V - 1); w.add_eos_token_id(V - 1)
    t = lambda *s: (rng.standard_normal(s) * 0.02).astype(np.float32)
    w.add_tensor("token_embd.weight", t(V, d)); w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    w.add_tensor("output.weight", t(V, d))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(d, np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", t(heads * hd, d)); w.add_tensor(f"blk.{i}.attn_k.weight", t(kv_heads * hd, d))
        w.add_tensor(f"blk.{i}.attn_v.weight", t(kv_heads * hd, d)); w.add_tensor(f"blk.{i}.attn_output.weight", t(d, heads * hd))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(d, np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", t(ff, d)); w.add_tensor(f"blk.{i}.ffn_up.weight", t(ff, d))
        w.add_tensor(f"blk.{i}.ffn_down.weight", t(d, ff))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return path


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    "Two importable packages shipping the tiny GGUF: whole (`tiny_llm_pkg`) and in three parts (`tiny_llm_parts`)."
    root = tmp_path / "site"
    whole = root / "tiny_llm_pkg"; whole.mkdir(parents=True)
    (whole / "__init__.py").write_text("")
    gguf_file = write_tiny_llama_gguf(whole / "tiny.gguf")
    data = gguf_file.read_bytes()
    parts = root / "tiny_llm_parts"; parts.mkdir()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    for k in range(3): (parts / f"part{k}").write_bytes(data[cuts[k]:cuts[k + 1]])
    (parts / "__init__.py").write_text("from pathlib import Path\n"
                                       "def chunk_paths():\n    return [Path(__file__).parent / f'part{k}' for k in range(3)]\n")
    monkeypatch.syspath_prepend(str(root))
    sha = hashlib.sha256(data).hexdigest()
    return {"whole": PackagedBackbone("tiny-llm-pkg", "tiny_llm_pkg", "tiny.gguf", sha),
            "parts": PackagedBackbone("tiny-llm-parts", "tiny_llm_parts", "tiny.gguf", sha, parts=True),
            "missing": PackagedBackbone("not-installed-llm", "not_installed_llm", "x.gguf", sha),
            "wrong": PackagedBackbone("tiny-llm-pkg", "tiny_llm_pkg", "tiny.gguf", "0" * 64)}, gguf_file


@pytest.mark.parametrize("kind", ["whole", "parts"])
def test_packaged_gguf_converts_once_into_a_plain_folder(fake_packages, tmp_path, kind):
    specs, gguf_file = fake_packages
    path = packaged_backbone_path(kind, tmp_path / "cache", specs)
    assert (path / "config.json").exists() and not list(path.glob("*.gguf"))    # a plain folder, no GGUF copy kept
    stamp = (path / "config.json").stat().st_mtime_ns
    assert packaged_backbone_path(kind, tmp_path / "cache", specs) == path        # converted once
    assert (path / "config.json").stat().st_mtime_ns == stamp
    lm, tok = load_backbone(path)
    reference = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    ids = tok("Comedy : Toy Story (1995)", return_tensors="pt").input_ids
    with torch.no_grad(): torch.testing.assert_close(lm(ids).logits, reference(ids).logits)
    assert type(lm).__name__ == "LlamaForCausalLM" and lm.config.num_key_value_heads == 1


def test_missing_package_and_wrong_file_are_named(fake_packages, tmp_path):
    specs, _ = fake_packages
    with pytest.raises(BackboneError, match="pip install not-installed-llm"):
        packaged_backbone_path("missing", tmp_path / "cache", specs)
    with pytest.raises(BackboneError, match="has sha256 .* not the expected 0000"):
        packaged_backbone_path("wrong", tmp_path / "cache", specs)
    assert not list((tmp_path / "cache" / "backbones").glob("*/config.json"))  # nothing half-converted left to reuse


def _llama(tok):
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                        bos_token_id=tok.eos_token_id))


def _gemma(tok):
    return Gemma3ForCausalLM(Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                              max_position_embeddings=256, sliding_window=16, pad_token_id=tok.pad_token_id,
                                              eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id))


@pytest.mark.parametrize("architecture", ["llama", "gemma"])
@pytest.mark.parametrize("item_tokens", ["none", "instead"])
def test_lancer_on_llama_and_gemma(architecture, item_tokens, tmp_path):
    torch.set_num_threads(1); torch.manual_seed(0)
    ds = rule_dataset(n_users=16); ds.name = "ml-100k"
    split, template = leave_one_out(ds, max_history=4), template_for("ml-100k")
    tok = train_tokenizer(template.display_strings(ds.items) * 3 + [template.opener], vocab_size=300)
    make = {"llama": _llama, "gemma": _gemma}[architecture]
    head = ItemTokenHead(loss_on="all") if item_tokens == "instead" else TextHead()
    model = LancerModel(make(tok), make(tok), tok, ItemTexts(ds.items, template, tok),
                        LancerConfig(n_prefix=3, max_history=4, attn_heads=2), head)
    summary = train(model, split, TrainConfig(epochs_stage1=1, epochs_stage2=1, batch_size=8, num_beams=2, progress=False,
                                              valid_users=0), tmp_path)
    assert [h["stage"] for h in summary["valid_history"]] == [1, 2] and 0 <= summary["lancer"]["ndcg@10"] <= 1
    histories, seen = [ex.history for ex in split.test[:4]], [ex.seen for ex in split.test[:4]]
    for decoding in DECODINGS:
        ranked, _ = recommend(model, histories, k=3, num_beams=2, decoding=decoding, exclude=seen, progress=False)
        assert all(len(r) == len(set(r)) and not set(r) & set(s.tolist()) for r, s in zip(ranked, seen)), decoding
    if item_tokens == "none":                                                      # a mapper over the LM's hidden states
        mapper = EmbeddingMapper(hidden_state_encoder(model.lm, tok), model.texts.display, progress=False)
        assert mapper.map(model.texts.display[:3])[0].tolist() == [0, 1, 2]


def test_bf16_training_and_evaluation_on_cpu(tmp_path):
    from accelerate import Accelerator
    torch.set_num_threads(1); torch.manual_seed(0)
    ds = rule_dataset(n_users=16); ds.name = "ml-100k"
    split, template = leave_one_out(ds, max_history=4), template_for("ml-100k")
    tok = train_tokenizer(template.display_strings(ds.items) * 3 + [template.opener], vocab_size=300)
    model = LancerModel(_llama(tok), _llama(tok), tok, ItemTexts(ds.items, template, tok),
                        LancerConfig(n_prefix=3, max_history=4, attn_heads=2))
    cfg = TrainConfig(epochs_stage1=1, epochs_stage2=1, batch_size=8, num_beams=2, progress=False, valid_users=0,
                      mixed_precision="bf16")
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)                  # one Accelerator setting per process
    try: summary = train(model, split, cfg, tmp_path, Accelerator(cpu=True, mixed_precision="bf16"))
    finally: AcceleratorState._reset_state(reset_partial_state=True)
    assert summary["config"]["mixed_precision"] == "bf16" and 0 <= summary["lancer"]["ndcg@10"] <= 1
    assert all(p.dtype == torch.float32 for p in model.parameters())           # weights stay fp32; matmuls run in bf16


def test_checkpoints_reference_their_frozen_pretrained_backbone(fake_packages, tmp_path):
    from safetensors.torch import load_file, save_file
    from lancer.checkpoints import load_model, save_model
    from lancer.pipeline import build_model
    specs, _ = fake_packages
    source = packaged_backbone_path("whole", tmp_path / "cache", specs)
    ds = rule_dataset(n_users=8); ds.name = "ml-100k"
    model = build_model(ds, str(source), LancerConfig(n_prefix=3, max_history=4, attn_heads=2))
    ckpt = save_model(model, tmp_path / "ckpt")
    assert not (ckpt / "knowledge_lm").exists()                               # referenced, not copied
    assert json_load(ckpt / "knowledge_lm.json")["source"] == str(source)
    histories = [ex.history for ex in leave_one_out(ds, max_history=4).test]
    same = lambda m: recommend(m, histories, k=3, num_beams=2, decoding="constrained", progress=False)[0]
    assert same(load_model(ckpt, ds.items)) == same(model)
    weights = load_file(source / "model.safetensors")                         # the source changes under the checkpoint
    name = next(iter(weights)); weights[name] = weights[name] + 1
    save_file(weights, source / "model.safetensors")
    with pytest.raises(ValueError, match="has other weights than the checkpoint was trained with"):
        load_model(ckpt, ds.items)


def json_load(path):
    import json
    return json.loads(Path(path).read_text())


def test_texts_start_the_way_the_tokenizer_starts_them():
    "A tokenizer that puts <bos> before every text (Gemma's) gets it before knowledge texts and sequences, once."
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast
    ds = rule_dataset(n_users=8); ds.name = "ml-100k"
    template = template_for("ml-100k")
    plain = train_tokenizer(template.display_strings(ds.items) * 3 + [template.opener], vocab_size=300)
    backend = Tokenizer.from_str(plain.backend_tokenizer.to_str())          # a copy: `plain` stays as it is
    backend.add_special_tokens(["<bos>"])
    bos = backend.token_to_id("<bos>")
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token=plain.eos_token,
                                  pad_token=plain.eos_token)
    texts, plain_texts = ItemTexts(ds.items, template, tok), ItemTexts(ds.items, template, plain)
    assert texts.start_ids == [bos] and plain_texts.start_ids == []
    assert all(ids[0] == bos and ids.count(bos) == 1 for ids in texts.knowledge_ids)
    assert texts.opener_ids[0] == bos and texts.opener_ids[1:] == plain_texts.opener_ids
    torch.manual_seed(0)
    model = LancerModel(_llama(tok), _llama(tok), tok, texts, LancerConfig(n_prefix=3, max_history=4, attn_heads=2))
    ranked, beams = recommend(model, [[0, 1], [3]], k=3, num_beams=2, decoding="constrained", progress=False)
    assert all(len(r) == 3 for r in ranked) and all(t in texts.display for b in beams for t in b)
