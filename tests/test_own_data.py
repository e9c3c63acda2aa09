"""Your own data from the command line: the shipped example catalogue (recipes) loads, trains, evaluates and
recommends through `--interactions/--items`; bad files fail with one line naming the file and the line."""
import pandas as pd
import pytest

from lancer.cli import main
from lancer.data import EXAMPLE_CATALOGUE, DataFormatError, load_files

TINY = ["--epochs-stage1", "0", "--epochs-stage2", "1", "--num-beams", "2", "--n-layer", "1", "--n-embd", "32",
        "--n-head", "2", "--pretrain-epochs", "1", "--max-history", "3", "--preset", "item-tokens"]


@pytest.fixture
def recipes(tmp_path, monkeypatch):
    "The example's items and the interactions of its first 30 cooks, as CSV, in a fresh cache."
    monkeypatch.setenv("LANCER_CACHE", str(tmp_path / "cache"))
    inter = pd.read_csv(EXAMPLE_CATALOGUE / "interactions.csv")
    inter[inter.user_id.isin(sorted(inter.user_id.unique())[:30])].to_csv(tmp_path / "inter.csv", index=False)
    return ["--interactions", str(tmp_path / "inter.csv"), "--items", str(EXAMPLE_CATALOGUE / "items.csv"),
            "--text-columns", "cuisine", "name"]


def test_the_example_catalogue_ships_with_the_package():
    ds = load_files(EXAMPLE_CATALOGUE / "interactions.csv", EXAMPLE_CATALOGUE / "items.csv")
    assert (ds.n_users, ds.n_items) == (400, 320) and ds.text_columns == ("name", "cuisine", "description")
    assert min(len(s) for s in ds.sequences) >= 5


def test_own_data_trains_evaluates_and_recommends(recipes, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *recipes, "--output-dir", str(run), *TINY]) == 0
    assert "ndcg@10" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(run / "best")]) == 0                 # finds its files again
    assert "ndcg@10" in capsys.readouterr().out
    assert main(["recommend", "--checkpoint", str(run / "best"), "--user", "cook001"]) == 0
    out = capsys.readouterr().out
    history = out.split("top-")[0]
    assert "user cook001" in out and " : " in history                                # "cuisine : name" strings
    recs = [line.split(". ", 1)[1].split("   <-")[0] for line in out.split("top-")[1].splitlines()[1:] if ". " in line]
    assert len(recs) == 10 and not set(recs) & set(l.strip() for l in history.splitlines()[1:])
    assert main(["recommend", "--checkpoint", str(run / "best"), "--users", "all", "--output", str(tmp_path / "r.csv")]) == 0
    assert pd.read_csv(tmp_path / "r.csv").user.nunique() == 30


def test_own_data_statistics(recipes, capsys):
    assert main(["data", *recipes]) == 0
    assert "dataset recipes" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--interactions", "x.csv"], "--interactions and --items go together"),
    (["--interactions", "nope.csv", "--items", str(EXAMPLE_CATALOGUE / "items.csv")], "nope.csv: file not found"),
    (["--interactions", str(EXAMPLE_CATALOGUE / "interactions.csv"), "--items", str(EXAMPLE_CATALOGUE / "items.csv"),
      "--user-column", "cook"], "interactions.csv: no column 'cook'"),
])
def test_bad_own_data_is_one_line(args, message, capsys):
    assert main(["data", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lancer: error:") and message in err and "\n" not in err


GOOD_INTER, GOOD_ITEMS = "user_id,item_id,timestamp\na,1,5\n", "item_id\ttitle\n1\tTea\n"


@pytest.mark.parametrize("inter, items, items_name, message", [
    (GOOD_INTER, "item_id\ttitle\n1\tTea\n\tCake\n", "items.tsv", r"items.tsv, line 3: no item_id"),
    (GOOD_INTER, "item_id\ttitle\n1\tTea\n1\tCake\n", "items.tsv", "item id '1' appears more than once"),
    ("user_id,item_id,timestamp\na,1,5\n,1,6\n", GOOD_ITEMS, "items.tsv", r"inter.csv, line 3: no user_id"),
    (GOOD_INTER, "", "items.xlsx", "unknown format"),
])
def test_bad_rows_name_their_line(tmp_path, inter, items, items_name, message):
    (tmp_path / "inter.csv").write_text(inter); (tmp_path / items_name).write_text(items)
    with pytest.raises(DataFormatError, match=message):
        load_files(tmp_path / "inter.csv", tmp_path / items_name)
