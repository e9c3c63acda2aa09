"""Faults a careful user (or a tester) will hit: runs killed at random moments resume to exactly the uninterrupted
result, checkpoint and cache writes are all-or-nothing, one run per output folder, checkpoints refuse other data and
changed settings, bad command-line values fail at once with one line naming the option."""
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from lancer.offline_backbone import OfflineBackboneConfig
from lancer.cli import build_parser, main
from lancer.model import LancerConfig
from lancer.item_tokens import ItemTokenHead
from lancer.checkpoints import save_model
from lancer.pipeline import build_model, offline_backbone_path, train_lancer
from lancer.protocol import template_for
from lancer.resume import RunLockedError, run_lock
from lancer.training import TrainConfig, rule_dataset

HERE = Path(__file__).parent
WORKER = HERE / "resume_worker.py"
TINY = OfflineBackboneConfig(n_layer=1, n_embd=32, n_head=2, vocab_size=300, epochs=2, batch_size=16)
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def rule(n_users=16):
    ds = rule_dataset(n_users=n_users)
    ds.name = "ml-100k"
    return ds


@pytest.fixture(scope="module")
def inits(tmp_path_factory):
    "Untrained tiny text and item-token models for `rule(16)` (dropout on), the common start of the runs below."
    torch.set_num_threads(1)
    cache, out = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("init")
    ds = rule()
    text = build_model(ds, "offline", LancerConfig(n_prefix=3, max_history=4, attn_heads=2), TINY, cache_dir=cache)
    items = build_model(ds, "offline", LancerConfig(n_prefix=3, max_history=4, attn_heads=2), TINY, cache_dir=cache,
                        head=ItemTokenHead(loss_on="all"))
    return {"text": save_model(text, out / "text"), "items": save_model(items, out / "items")}


def worker(init, out, preset, resume=False):
    cmd = [sys.executable, str(WORKER), "--init", str(init), "--output-dir", str(out), "--preset", preset]
    return subprocess.Popen(cmd + (["--resume"] if resume else []), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def final_state(out: Path) -> tuple[dict, dict]:
    "The test metrics and the prompt weights of the best checkpoint of a finished run."
    return json.loads((out / "metrics.json").read_text())["lancer"], load_file(out / "best" / "prompts.safetensors")


@pytest.mark.parametrize("preset", ["text", "items"])
def test_killed_at_random_moments_resumes_exactly(inits, tmp_path, preset):
    whole = worker(inits[preset], tmp_path / "whole", preset)
    t0 = time.time()
    assert whole.wait(timeout=300) == 0, whole.stderr.read()[-3000:]
    duration = time.time() - t0
    import shutil
    rng = random.Random(preset)
    out, kills, resume, budget = tmp_path / "killed", 0, False, duration
    while True:                                            # kill at a random moment, resume, until a run finishes
        proc = worker(inits[preset], out, preset, resume)
        if kills < 3:
            try:
                proc.wait(timeout=rng.uniform(0.2, 0.8) * budget)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL); proc.wait(); kills += 1; resume = True; continue
            if kills == 0:                                 # done before the first kill: start over, and kill sooner
                assert proc.returncode == 0, proc.stderr.read()[-3000:]
                shutil.rmtree(out); budget /= 2; continue
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
        break
    assert kills >= 1
    (metrics_a, weights_a), (metrics_b, weights_b) = final_state(tmp_path / "whole"), final_state(out)
    assert metrics_b == metrics_a
    for name, tensor in weights_a.items():
        torch.testing.assert_close(weights_b[name], tensor, rtol=0, atol=0, msg=name)


def test_interrupted_checkpoint_write_keeps_the_previous_one(inits, tmp_path, monkeypatch):
    from lancer import checkpoints as checkpoint_module
    from lancer.checkpoints import load_model
    ds = rule()
    good = save_model(load_model(inits["text"], ds.items), tmp_path / "ckpt")
    before = load_file(good / "prompts.safetensors")
    real = checkpoint_module.save_file
    def dies(tensors, path, *a, **k):
        Path(path).write_bytes(b"half a file")                           # a kill half-way through the weights
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpoint_module, "save_file", dies)
    with pytest.raises(KeyboardInterrupt):
        save_model(load_model(inits["text"], ds.items), good)
    monkeypatch.setattr(checkpoint_module, "save_file", real)
    after = load_file(good / "prompts.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    load_model(good, ds.items)                                              # still whole and loadable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]           # nothing half-written left behind


def test_interrupted_backbone_build_leaves_no_cache(tmp_path, monkeypatch):
    from lancer import pipeline
    ds = rule()
    def dies(texts, cfg, path):
        (Path(path) / "config.json").write_text("{}")                    # written before the tokenizer ...
        raise KeyboardInterrupt                                           # ... and the build is killed
    monkeypatch.setattr(pipeline, "build_offline_backbone", dies)
    with pytest.raises(KeyboardInterrupt):
        offline_backbone_path(ds, template_for("ml-100k"), TINY, tmp_path)
    assert not list((tmp_path / "backbones").glob("ml-100k-*/config.json"))   # not taken for a built backbone
    monkeypatch.undo()
    path = offline_backbone_path(ds, template_for("ml-100k"), TINY, tmp_path)
    assert (path / "config.json").exists() and (path / "tokenizer.json").exists()


def test_one_run_per_output_folder(tmp_path, capsys, caplog):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from lancer.resume import run_lock\n"
                               "with run_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)",
                               str(tmp_path / "run")], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            with run_lock(tmp_path / "run"): pass
        assert main(["train", "--output-dir", str(tmp_path / "run")]) == 2   # stops at once, before any work
        assert f"pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill(); holder.wait()
    with run_lock(tmp_path / "run"): pass                                    # the owner is gone: taken over
    assert "no longer running" in caplog.text


def _train_small(ds, out, resume=False, **changes):
    config = LancerConfig(n_prefix=3, max_history=4, attn_heads=2)
    cfg = TrainConfig(**{"epochs_stage1": 0, "epochs_stage2": 1, "batch_size": 8, "num_beams": 2, "progress": False,
                         "valid_users": 0, **changes})
    return train_lancer(ds, out, config=config, train_config=cfg, backbone_config=TINY, resume=resume)


def test_checkpoints_refuse_other_data_and_changed_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("LANCER_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    ds = rule(16)
    _train_small(ds, tmp_path / "run", max_steps=2)
    with pytest.raises(ValueError, match=r"trained on other data: .* 12 items .* not .* 12 items"):
        _train_small(rule(20), tmp_path / "run", resume=True)               # other users: another fingerprint
    with pytest.raises(ValueError, match=r"batch_size: 8 then, 4 now"):
        train_lancer(ds, tmp_path / "run", config=LancerConfig(n_prefix=3, max_history=4, attn_heads=2),
                     train_config=TrainConfig(epochs_stage1=0, epochs_stage2=1, batch_size=4, num_beams=2,
                                              progress=False, valid_users=0), backbone_config=TINY, resume=True)
    summary = train_lancer(ds, tmp_path / "run", config=LancerConfig(n_prefix=3, max_history=4, attn_heads=2),
                           train_config=TrainConfig(epochs_stage1=0, epochs_stage2=1, batch_size=4, num_beams=2,
                                                    progress=False, valid_users=0), backbone_config=TINY,
                           resume=True, force=True)                         # forced: it goes on
    assert "lancer" in summary


def write_ml100k(folder: Path, n_users: int = 20, n_items: int = 12, length: int = 8) -> Path:
    "MovieLens-100K files (u.data, u.item) of a small next-item rule: user u watches items u, u+1, ... (mod n_items)."
    folder.mkdir(parents=True)
    genres = "|".join(["0"] * 19)
    (folder / "u.item").write_text("".join(f"{j + 1}|Movie {j} ({1990 + j})|01-Jan-{1990 + j}||http://x|{genres}\n"
                                           for j in range(n_items)), encoding="latin-1")
    (folder / "u.data").write_text("".join(f"{u + 1}\t{(u + t) % n_items + 1}\t4\t{880000000 + 1000 * t}\n"
                                           for u in range(n_users) for t in range(length)))
    return folder


def test_evaluate_refuses_a_changed_catalogue(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LANCER_CACHE", str(tmp_path / "cache"))
    data = write_ml100k(tmp_path / "data")
    assert main(["train", "--dataset", "ml-100k", "--data-dir", str(data), "--output-dir", str(tmp_path / "run"),
                 "--epochs-stage1", "0", "--epochs-stage2", "1", "--num-beams", "2", "--n-layer", "1", "--n-embd", "32",
                 "--n-head", "2", "--pretrain-epochs", "1", "--max-history", "3"]) == 0
    capsys.readouterr()
    import shutil
    shutil.rmtree(data); write_ml100k(data, n_items=10)                      # the data at that place changed
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "best")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lancer: error:") and "\n" not in err
    assert "trained on other data" in err and "12 items" in err and "10 items" in err


BAD = [(["train", "--output-dir", "x", "--epochs-stage1", "-1"], "--epochs-stage1", "-1"),
       (["train", "--output-dir", "x", "--batch-size", "0"], "--batch-size", "0"),
       (["train", "--output-dir", "x", "--grad-accum", "0"], "--grad-accum", "0"),
       (["train", "--output-dir", "x", "--num-beams", "0"], "--num-beams", "0"),
       (["train", "--output-dir", "x", "--windows-per-user", "-1"], "--windows-per-user", "-1"),
       (["train", "--output-dir", "x", "--lr-stage2", "-1"], "--lr-stage2", "-1"),
       (["train", "--output-dir", "x", "--label-smoothing", "1.5"], "--label-smoothing", "1.5"),
       (["recommend", "--checkpoint", "c", "--user", "1", "-k", "0"], "-k", "0"),
       (["recommend", "--checkpoint", "c", "--user", "1", "-k", "-3"], "-k", "-3"),
       (["evaluate", "--checkpoint", "c", "--num-beams", "0"], "--num-beams", "0")]


@pytest.mark.parametrize("argv, option, value", BAD)
def test_bad_values_fail_at_once_in_one_line(argv, option, value, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and option in err and repr(value) in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()                                    # nothing was started


@pytest.mark.parametrize("old, new, field, value", [(["--lr", "3e-3"], ["--lr-stage2", "3e-3"], "lr_stage2", 3e-3),
                                                     (["--one-example-per-user"], ["--no-all-positions"], "all_positions", False)])
def test_renamed_options_still_work_with_a_warning(old, new, field, value):
    from lancer.options import configs_from_args, renamed
    with pytest.warns(FutureWarning, match=f"{old[0]} is deprecated.*use {new[0]}"):
        argv = renamed(["train", "--output-dir", "x", *old])
    assert argv == ["train", "--output-dir", "x", *new]
    assert getattr(configs_from_args(build_parser().parse_args(argv))[1], field) == value
    with pytest.warns(FutureWarning, match=f"{old[0]} is deprecated"):              # the parser reads them too
        args = build_parser().parse_args(["train", "--output-dir", "x", *old])
    assert getattr(configs_from_args(args)[1], field) == value


def test_output_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["train", "--output-dir", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["ablation", "history-lengths", "decoding", "template-robustness"])
def test_unknown_dataset_for_every_command(command, capsys):
    from lancer.lab.cli import main as lab_main
    assert lab_main([command, "--dataset", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err


@settings(max_examples=40, deadline=None)
@given(st.integers(-5, 5), st.sampled_from(["--batch-size", "--num-beams", "--grad-accum", "--max-history"]))
def test_positive_options_accept_exactly_the_positive_integers(value, option):
    try:
        args = build_parser().parse_args(["train", "--output-dir", "x", option, str(value)])
    except SystemExit:
        assert value < 1
    else:
        assert value >= 1 and getattr(args, option[2:].replace("-", "_")) == value


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        main(["--debug", "train", "--output-dir", str(tmp_path / "file")])


def test_a_minimum_no_user_reaches_is_refused_by_name():
    from lancer.data import DataFormatError, filter_min_interactions
    with pytest.raises(DataFormatError, match=r"no user has at least 50 interactions \(16 users, the longest history has 8\)"):
        filter_min_interactions(rule(16), 50)


# ------------------------------------------------------------------------------------------------- bad data

def ml100k_files(folder: Path, data: str, item_bytes: bytes | None = None) -> Path:
    "`u.data` with `data` and a two-film `u.item` (UTF-8 unless `item_bytes` says otherwise)."
    folder.mkdir(parents=True, exist_ok=True)
    flags = "|".join(["0"] * 19)
    items = f"1|Misérables, Les (1995)|01-Jan-1995||http://x|{flags}\n2|Heat (1995)|01-Jan-1995||http://x|{flags}\n"
    (folder / "u.item").write_bytes(item_bytes if item_bytes is not None else items.encode())
    (folder / "u.data").write_text(data)
    return folder


def test_user_ids_are_normalised_or_refused(tmp_path):
    from lancer.data import DataFormatError
    from lancer.datasets import load_ml100k
    d = ml100k_files(tmp_path / "a", "196 \t1\t3\t10\n0196\t2\t3\t20\n+196\t1\t4\t30\n")
    ds = load_ml100k(d, duplicates="keep")
    assert ds.users == ["196"] and ds.n_interactions == 3                   # one user, whatever the spelling
    d = ml100k_files(tmp_path / "b", "196\t1\t3\t10\n196.0\t2\t3\t20\n")
    with pytest.raises(DataFormatError, match=r"u.data, line 2: field 'user id' is not a whole number: '196.0'"):
        load_ml100k(d)


def test_duplicate_rows_are_counted_and_follow_the_policy(tmp_path):
    from lancer.data import DataFormatError
    from lancer.datasets import load_ml100k
    d = ml100k_files(tmp_path, "1\t1\t3\t10\n1\t2\t3\t20\n1\t1\t3\t10\n1\t1\t5\t30\n")
    with pytest.warns(UserWarning, match=r"1 rows repeat an earlier \(user, item, time\) exactly \(first at line 3\); dropped"):
        assert load_ml100k(d).n_interactions == 3                            # the repeat at another time is kept
    assert load_ml100k(d, duplicates="keep").n_interactions == 4
    with pytest.raises(DataFormatError, match="line 3: repeats line 1"):
        load_ml100k(d, duplicates="error")


def test_items_are_read_as_utf8_first_then_latin1_with_a_notice(tmp_path):
    from lancer.datasets import load_ml100k
    ds = load_ml100k(ml100k_files(tmp_path / "utf8", "1\t1\t3\t10\n1\t2\t3\t20\n"))
    assert ds.items.title[0] == "Misérables, Les (1995)"                     # no mojibake
    latin = ml100k_files(tmp_path / "latin", "1\t1\t3\t10\n1\t2\t3\t20\n",
                         "1|Misérables, Les (1995)|01-Jan-1995||http://x|{0}\n2|Heat (1995)|01-Jan-1995||http://x|{0}\n"
                         .format("|".join(["0"] * 19)).encode("latin-1"))
    with pytest.warns(UserWarning, match=r"u.item is not valid utf-8 \(line 1\); read as latin-1"):
        assert load_ml100k(latin).items.title[0] == "Misérables, Les (1995)"


def test_unreadable_places_and_values_are_named(tmp_path):
    from lancer.data import DataFormatError
    from lancer.datasets import load_ml100k
    d = ml100k_files(tmp_path / "a", "1\t1\t3\t10\n")
    (d / "u.data").unlink(); (d / "u.data").mkdir()
    with pytest.raises(DataFormatError, match=r"u.data: is a folder, not a file"):
        load_ml100k(d)
    d = ml100k_files(tmp_path / "b", "1\t1\t3\t99999999999999999999999\n")
    with pytest.raises(DataFormatError, match=r"u.data, line 1: field 'timestamp' is out of range"):
        load_ml100k(d)


def test_null_titles_and_byte_order_marks(tmp_path):
    import shutil
    from lancer.data import DataFormatError
    from lancer.news_and_books import load_goodreads, load_mind
    g = tmp_path / "goodreads"; shutil.copytree(HERE / "fixtures" / "goodreads", g)
    books = sorted(g.glob("goodreads_books*"))[0]
    import gzip
    opener = gzip.open if books.suffix == ".gz" else open
    with opener(books, "rt") as f: lines = f.read().splitlines()
    record = json.loads(lines[1]); record["title"] = None; lines[1] = json.dumps(record)
    with opener(books, "wt") as f: f.write("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"line 2: field 'title' is empty or null"):
        load_goodreads(g)
    m = tmp_path / "mind"; shutil.copytree(HERE / "fixtures" / "mind", m)
    (m / "news.tsv").write_bytes(b"\xef\xbb\xbf" + (m / "news.tsv").read_bytes())
    assert load_mind(m).items.raw_id[0] == load_mind(HERE / "fixtures" / "mind").items.raw_id[0]


@pytest.mark.parametrize("damage", ["empty weights", "truncated json", "no lm"])
def test_damaged_checkpoints_are_named(inits, tmp_path, damage):
    import shutil
    from lancer.checkpoints import load_model
    ckpt = tmp_path / "ckpt"; shutil.copytree(inits["text"], ckpt)
    if damage == "empty weights": (ckpt / "prompts.safetensors").write_bytes(b"")
    if damage == "truncated json": (ckpt / "lancer.json").write_text((ckpt / "lancer.json").read_text()[:40])
    if damage == "no lm": shutil.rmtree(ckpt / "lm")
    with pytest.raises((ValueError, FileNotFoundError), match=str(ckpt)):
        load_model(ckpt, rule().items)


def test_a_last_line_without_line_end_is_reported(tmp_path):
    from lancer.datasets import load_ml100k
    d = ml100k_files(tmp_path, "1\t1\t3\t10\n1\t2\t3\t8812")                   # a copy cut short inside the timestamp
    with pytest.warns(UserWarning, match=r"u.data: the last line \(2\) has no line end; the file may be truncated"):
        load_ml100k(d)


def test_duplicates_policy_from_the_command_line(tmp_path, capsys):
    d = ml100k_files(tmp_path / "data", "".join(f"{u}\t{i}\t3\t{10 * i}\n" for u in (1, 2, 3) for i in (1, 2)) * 2 +
                     "".join(f"{u}\t1\t4\t99\n" for u in (1, 2, 3)))
    assert main(["data", "--dataset", "ml-100k", "--data-dir", str(d), "--duplicates", "error"]) == 2
    assert "repeats line 1" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="6 rows repeat"):
        assert main(["data", "--dataset", "ml-100k", "--data-dir", str(d), "--min-interactions", "3"]) == 0
    assert re.search(r"n_interactions\s+9\s+9", capsys.readouterr().out)   # 3 users x 3 interactions, repeats dropped


def test_every_command_line_option_has_help():
    import argparse
    missing = []
    def walk(parser, command):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items(): walk(sub, f"{command} {name}")
            elif not action.help:
                missing.append(f"{command} {'/'.join(action.option_strings) or action.dest}")
    from lancer.lab.cli import build_parser as build_lab_parser
    walk(build_parser(), "lancer"); walk(build_lab_parser(), "lancer-lab")
    assert not missing, missing


def test_quiet_and_verbose(tmp_path, capsys):
    import logging
    from lancer.cli import _configure_output
    try:
        _configure_output(quiet=True)
        assert logging.getLogger("lancer").level == logging.WARNING and os.environ.get("TQDM_DISABLE") == "1"
        args = build_parser().parse_args(["--quiet", "train", "--output-dir", "x"])
        from lancer.options import configs_from_args as _configs
        assert _configs(args)[1].progress is False
        _configure_output(verbose=True)
        assert logging.getLogger("lancer").level == logging.DEBUG
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--quiet", "--verbose", "data"])
    finally:
        os.environ.pop("TQDM_DISABLE", None); logging.getLogger("lancer").setLevel(logging.NOTSET)


@pytest.mark.parametrize("preset", ["text", "items"])
def test_stopped_at_any_step_resumes_bit_for_bit(inits, tmp_path, preset):
    "Stopped after step k (inside stage 1, inside stage 2, at an epoch end) and resumed: the same weights, bit for bit."
    sys.path.insert(0, str(HERE))
    from dataclasses import replace
    from resume_worker import config
    from lancer.checkpoints import load_model
    from lancer.protocol import leave_one_out
    from lancer.trainer import train
    torch.set_num_threads(1)
    ds = rule(); split = leave_one_out(ds, max_history=4)
    cfg = replace(config(preset), save_every=0)
    whole = train(load_model(inits[preset], ds.items), split, cfg, tmp_path / "whole")
    steps = whole["train_steps"][-1]["step"]
    per_epoch = sum(1 for s in whole["train_steps"] if s["stage"] == 1)
    for k in sorted({2, per_epoch, per_epoch + 1, steps - 2}):
        out = tmp_path / f"stop{k}"
        train(load_model(inits[preset], ds.items), split, replace(cfg, max_steps=k), out)
        again = train(load_model(inits[preset], ds.items), split, cfg, out, resume=True)
        assert again["lancer"] == whole["lancer"], k
        for part in ("prompts.safetensors", "lm/model.safetensors"):              # prompts and the generating LM
            a, b = (load_file(d / "last" / part) for d in (tmp_path / "whole", out))
            assert all(torch.equal(a[n], b[n]) for n in a), (k, part)


def test_backbone_build_killed_midway_leaves_no_cache(tmp_path):
    "A real build process killed while it pretrains leaves nothing that a later run would take for a built backbone."
    script = ("import sys, torch\nfrom lancer.offline_backbone import OfflineBackboneConfig\n"
              "from lancer.pipeline import offline_backbone_path\nfrom lancer.protocol import template_for\n"
              "from lancer.training import rule_dataset\n"
              "torch.set_num_threads(1); ds = rule_dataset(n_users=16); ds.name = 'ml-100k'\n"
              "cfg = OfflineBackboneConfig(n_layer=1, n_embd=32, n_head=2, vocab_size=300, epochs=int(sys.argv[2]), batch_size=4)\n"
              "print(offline_backbone_path(ds, template_for('ml-100k'), cfg, sys.argv[1]), flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), "400"], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob("backbones/.*.tmp-*")) and time.time() < deadline: time.sleep(0.1)
    time.sleep(2.0)                                                      # the build is under way (400 epochs)
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert not list(tmp_path.glob("backbones/ml-100k-*/config.json"))    # no half-built backbone in the cache
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path), "1"], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    built = Path(done.stdout.strip().splitlines()[-1])
    assert (built / "config.json").exists() and (built / "tokenizer.json").exists()
