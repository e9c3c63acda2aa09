"""Tests for lancer.data, .datasets and .download: loaders on raw fixtures, bad input, filtering, stats, download, cache."""
import gzip
import json
import shutil
import tempfile
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

import lancer.data as D
import lancer.news_and_books as NB
import lancer.download as DL
from lancer.data import DataFormatError, SeqDataset, filter_min_interactions, dataset_stats, stats_table
from lancer.download import DownloadError, load_dataset, data_command, download
from lancer.datasets import load_ml100k, load_recbole_atomic, load_ml1m, read_lines
from lancer.news_and_books import load_mind, load_goodreads

FX = Path(__file__).parent/"fixtures"


def raw(ds: SeqDataset) -> list[list[str]]:
    "Sequences as raw item ids."
    return [list(ds.items["raw_id"].to_numpy()[s]) for s in ds.sequences]


@pytest.fixture
def copy(tmp_path):
    "Copy a fixture folder into tmp_path and return the copy."
    def _copy(name):
        dst = tmp_path/name
        shutil.copytree(FX/name, dst)
        return dst
    return _copy


def gz_lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines()


def write_gz(path: Path, lines: list[bytes]):
    path.write_bytes(gzip.compress(b"".join(l + b"\n" for l in lines)))


# ----------------------------------------------------------------------------------------------- loaders on fixtures
def test_ml100k_fixture():
    ds = load_ml100k(FX/"ml-100k")
    assert ds.name == "ml-100k"
    assert ds.users == ["22", "186", "196"]                     # natural order of raw ids
    assert raw(ds) == [["1", "4", "5"], ["1", "2"], ["3", "1", "2"]]  # ties keep file order
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 5, 8)
    assert list(ds.items.columns) == ["raw_id", "title", "year", "genres"]
    assert ds.items.index.name == "item_id" and list(ds.items.index) == list(range(5))
    assert ds.items.loc[3, "title"] == "Misérables, Les (1995)"   # latin-1 decoded
    assert ds.items.loc[4].to_dict() == dict(raw_id="5", title="unknown", year="", genres="unknown")
    assert all(s.dtype == np.int64 for s in ds.sequences)
    assert all((np.diff(t) >= 0).all() for t in ds.timestamps)
    assert ds.timestamps[0].tolist() == [878887000, 878887116, 878887116]


def test_recbole_matches_ml100k():
    a, b = load_ml100k(FX/"ml-100k"), load_recbole_atomic(FX/"recbole", "ml-100k")
    assert raw(a) == raw(b) and a.users == b.users
    assert [t.tolist() for t in a.timestamps] == [t.tolist() for t in b.timestamps]
    assert a.items[["raw_id", "title", "year", "genres"]].equals(b.items[["raw_id", "title", "year", "genres"]])


def test_ml1m_fixture():
    ds = load_ml1m(FX/"ml-1m")
    assert ds.users == ["1", "2"]
    assert raw(ds) == [["1", "2", "3"], ["4", "2"]]
    assert ds.items.loc[0].to_dict() == dict(raw_id="1", title="Toy Story (1995)", year="1995",
                                             genres="Animation, Children's, Comedy")
    assert ds.items.loc[3, "title"] == "Misérables, Les (1995)"


def test_mind_fixture():
    ds = load_mind(FX/"mind")
    assert ds.users == ["U1", "U2"]
    assert raw(ds) == [["N1", "N2", "N3", "N5", "N4"], ["N3"]]
    ts = ds.timestamps[0]
    assert (np.diff(ts) >= 0).all() and ts[0] == ts[3] - 1    # history just before the first impression
    assert list(ds.items.columns) == ["raw_id", "category", "subcategory", "title", "abstract"]
    assert ds.items.loc[3, "abstract"] == ""
    assert "café" in ds.items.loc[5, "title"]


def test_goodreads_fixture():
    ds = load_goodreads(FX/"goodreads")
    ua, ub = "8842281e1d1347389f2ab93d60773d4d", "72fb0d0087d28c832f15776b0d936598"
    assert ds.users == sorted([ua, ub])
    seqs = dict(zip(ds.users, raw(ds)))
    assert seqs[ua] == ["1001", "1002", "1003"]     # 1002 and 1003 added at the same instant: file order
    assert seqs[ub] == ["1003", "1001", "1002"]     # time zones respected
    it = ds.items.set_index("raw_id")
    assert it.loc["1001", "genres"] == "poetry, fiction"
    assert it.loc["1002", "genres"] == "poetry, history, historical fiction, biography"
    assert it.loc["1003", "genres"] == "" and it.loc["1003", "year"] == ""
    assert it.loc["1003", "authors"] == "T.S. Eliot, 10"            # unknown author id kept as id
    assert it.loc["1001", "average_rating"] == "4.02"
    assert set(ds.items.columns) >= {"raw_id", "title", "genres", "description", "authors", "average_rating", "year"}
    assert load_goodreads(FX/"goodreads", read_only=True).n_interactions == 4


def test_goodreads_without_author_names(copy):
    d = copy("goodreads")
    (d/"goodreads_book_authors.json.gz").unlink()
    assert load_goodreads(d).items.set_index("raw_id").loc["1001", "authors"] == "7"


def test_goodreads_uncompressed(copy, tmp_path):
    d = copy("goodreads")
    for p in d.glob("*.gz"):
        p.with_suffix("").write_bytes(gzip.decompress(p.read_bytes())); p.unlink()
    assert raw(load_goodreads(d)) == raw(load_goodreads(FX/"goodreads"))


# -------------------------------------------------------------------------------------------------- bad input
def check_error(fn, *words):
    with pytest.raises(DataFormatError) as e: fn()
    for w in words: assert w in str(e.value), (w, str(e.value))


def replace_line(path: Path, no: int, new: bytes):
    lines = path.read_bytes().splitlines()
    lines[no - 1] = new
    path.write_bytes(b"\n".join(lines) + b"\n")


@pytest.mark.parametrize("fname,line,bad,words", [
    ("u.data", 2, b"186\t2\t3", ["u.data", "line 2", "expected 4"]),
    ("u.data", 3, b"196\t3\t4\tyesterday", ["u.data", "line 3", "timestamp"]),
    ("u.data", 4, b"22\t99\t1\t878887116", ["u.data", "line 4", "'99'", "not in the items table"]),
    ("u.item", 2, b"2|GoldenEye (1995)|01-Jan-1995", ["u.item", "line 2", "expected 24"]),
    ("u.item", 1, b"1|Toy Story (1995)|01-Jan-1995||url" + b"|2" * 19, ["u.item", "line 1", "genre flags"]),
    ("u.item", 2, b"1|Dup (1995)|01-Jan-1995||url" + b"|0" * 19, ["u.item", "appears more than once"]),
])
def test_ml100k_bad(copy, fname, line, bad, words):
    d = copy("ml-100k")
    replace_line(d/fname, line, bad)
    check_error(lambda: load_ml100k(d), *words)


@pytest.mark.parametrize("fname", ["u.data", "u.item"])
def test_ml100k_empty_and_missing(copy, fname):
    d = copy("ml-100k")
    (d/fname).write_bytes(b"")
    check_error(lambda: load_ml100k(d), fname, "empty")
    (d/fname).unlink()
    with pytest.raises(FileNotFoundError, match=fname): load_ml100k(d)


@pytest.mark.parametrize("fname,line,bad,words", [
    ("ml-100k.inter", 1, b"user_id:token\titem_id:token\trating:float", ["ml-100k.inter", "line 1", "'timestamp'"]),
    ("ml-100k.inter", 1, b"user_id\titem_id:token\ttimestamp:float", ["ml-100k.inter", "line 1", "name:type"]),
    ("ml-100k.inter", 3, b"186\t2\t3", ["ml-100k.inter", "line 3", "expected 4"]),
    ("ml-100k.inter", 3, b"186\t77\t3\t891717742", ["ml-100k.inter", "line 3", "'77'", "not in the items table"]),
    ("ml-100k.inter", 3, b"186\t2\t3\t\xff\xfe", ["ml-100k.inter", "line 3", "utf-8"]),
    ("ml-100k.item", 1, b"movie_title:token_seq\tclass:token_seq", ["ml-100k.item", "line 1", "'item_id'"]),
    ("ml-100k.item", 2, b"1\tToy Story", ["ml-100k.item", "line 2", "expected 4"]),
])
def test_recbole_bad(copy, fname, line, bad, words):
    d = copy("recbole")
    replace_line(d/fname, line, bad)
    check_error(lambda: load_recbole_atomic(d, "ml-100k"), *words)


@pytest.mark.parametrize("fname", ["ml-100k.inter", "ml-100k.item"])
def test_recbole_empty(copy, fname):
    d = copy("recbole")
    (d/fname).write_bytes(b"\n\n")
    check_error(lambda: load_recbole_atomic(d, "ml-100k"), fname, "empty")


def test_recbole_header_only(copy):
    d = copy("recbole")
    (d/"ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
    check_error(lambda: load_recbole_atomic(d, "ml-100k"), "ml-100k.inter", "no interactions")


@pytest.mark.parametrize("fname,line,bad,words", [
    ("ratings.dat", 2, b"1::3::3", ["ratings.dat", "line 2", "expected 4"]),
    ("ratings.dat", 2, b"1\t3\t3\t978302109", ["ratings.dat", "line 2", "expected 4"]),
    ("ratings.dat", 5, b"2::4::five::978298000", ["ratings.dat", "line 5", "Rating"]),
    ("ratings.dat", 1, b"1::42::5::978300760", ["ratings.dat", "line 1", "'42'"]),
    ("movies.dat", 3, b"3::Grumpier Old Men (1995)", ["movies.dat", "line 3", "expected 3"]),
    ("movies.dat", 3, b"x::Grumpier Old Men (1995)::Comedy", ["movies.dat", "line 3", "MovieID"]),
])
def test_ml1m_bad(copy, fname, line, bad, words):
    d = copy("ml-1m")
    replace_line(d/fname, line, bad)
    check_error(lambda: load_ml1m(d), *words)


@pytest.mark.parametrize("fname", ["ratings.dat", "movies.dat"])
def test_ml1m_empty(copy, fname):
    d = copy("ml-1m")
    (d/fname).write_bytes(b"")
    check_error(lambda: load_ml1m(d), fname, "empty")


@pytest.mark.parametrize("fname,line,bad,words", [
    ("behaviors.tsv", 2, b"2\tU2\t11/14/2019 10:00:00 AM\tN3-1", ["behaviors.tsv", "line 2", "expected 5"]),
    ("behaviors.tsv", 2, b"2\tU2\t2019-11-14\t\tN3-1", ["behaviors.tsv", "line 2", "'time'"]),
    ("behaviors.tsv", 2, b"2\tU2\t11/14/2019 10:00:00 AM\t\tN3-x", ["behaviors.tsv", "line 2", "'N3-x'"]),
    ("behaviors.tsv", 2, b"2\tU2\t11/14/2019 10:00:00 AM\t\tN3", ["behaviors.tsv", "line 2", "'N3'"]),
    ("behaviors.tsv", 2, b"2\tU2\t11/14/2019 10:00:00 AM\tN9\tN3-1", ["behaviors.tsv", "line 2", "'N9'", "news.tsv"]),
    ("behaviors.tsv", 2, b"2\tU2\t11/14/2019 10:00:00 AM\t\tN77-1", ["behaviors.tsv", "line 2", "'N77'"]),
    ("behaviors.tsv", 3, "3\tU1\t11/14/2019 9:00:00 PM\tN1\tN5-1 caf\xe9".encode("latin-1"),
     ["behaviors.tsv", "line 3", "utf-8"]),
    ("news.tsv", 4, b"N4\thealth\tvoices\tI Was An NBA Wife.", ["news.tsv", "line 4", "expected 8"]),
    ("news.tsv", 6, "N6\tweather\tw\tcaf\xe9\t\turl\t[]\t[]".encode("latin-1"), ["news.tsv", "line 6", "utf-8"]),
    ("news.tsv", 2, b"N1\tx\ty\tz\t\turl\t[]\t[]", ["news.tsv", "'N1'", "more than once"]),
])
def test_mind_bad(copy, fname, line, bad, words):
    d = copy("mind")
    replace_line(d/fname, line, bad)
    check_error(lambda: load_mind(d), *words)


@pytest.mark.parametrize("fname", ["behaviors.tsv", "news.tsv"])
def test_mind_empty(copy, fname):
    d = copy("mind")
    (d/fname).write_bytes(b"")
    check_error(lambda: load_mind(d), fname, "empty")


INTER, BOOKS, GENRES = (NB.GOODREADS_FILES[k] for k in ("interactions", "books", "genres"))


@pytest.mark.parametrize("fname,line,bad,words", [
    (INTER, 2, b'{"user_id": "u", "book_id": "1001"', [INTER, "line 2", "invalid JSON"]),
    (INTER, 2, b'["u", "1001"]', [INTER, "line 2", "JSON object"]),
    (INTER, 3, b'{"user_id": "u", "book_id": "1001"}', [INTER, "line 3", "'date_added'"]),
    (INTER, 3, b'{"book_id": "1001", "date_added": "Tue Oct 17 09:06:17 -0700 2017"}', [INTER, "line 3", "'user_id'"]),
    (INTER, 4, b'{"user_id": "u", "book_id": "1001", "date_added": "2017-10-17"}', [INTER, "line 4", "date_added"]),
    (INTER, 4, b'{"user_id": "u", "book_id": "4242", "date_added": "Tue Oct 17 09:06:17 -0700 2017"}',
     [INTER, "line 4", "'4242'", "not in the items table"]),
    (INTER, 1, '{"user_id": "caf\xe9", "book_id": "1001"}'.encode("latin-1"), [INTER, "line 1", "utf-8"]),
    (BOOKS, 2, b'{"book_id": "1002"}', [BOOKS, "line 2", "'title'"]),
    (BOOKS, 2, b'{"book_id": "1002", "title": "Ariel", "authors": "Plath"}', [BOOKS, "line 2", "'authors'"]),
    (BOOKS, 2, b'{"book_id": "1001", "title": "Again"}', [BOOKS, "'1001'", "more than once"]),
    (GENRES, 2, b'{"book_id": "1001", "genres": ["poetry"]}', [GENRES, "line 2", "'genres'"]),
    (GENRES, 3, b'{"book_id": "1002"}', [GENRES, "line 3", "'genres'"]),
])
def test_goodreads_bad(copy, fname, line, bad, words):
    d = copy("goodreads")
    lines = gz_lines(d/fname)
    lines[line - 1] = bad
    write_gz(d/fname, lines)
    check_error(lambda: load_goodreads(d), *words)


@pytest.mark.parametrize("fname", [INTER, BOOKS, GENRES])
def test_goodreads_empty_and_corrupt(copy, fname):
    d = copy("goodreads")
    write_gz(d/fname, [])
    check_error(lambda: load_goodreads(d), fname, "empty")
    (d/fname).write_bytes(gzip.compress(b'{"a": 1}\n' * 50)[:-20])   # truncated gzip stream
    check_error(lambda: load_goodreads(d), fname)


def test_read_lines_crlf_and_skip(tmp_path):
    p = tmp_path/"x.txt"
    p.write_bytes(b"head\r\na\r\n\r\nb")
    assert list(read_lines(p, skip=1)) == [(2, "a"), (4, "b")]


# ------------------------------------------------------------------------------------------ property-based parsers
row = st.tuples(st.integers(1, 30), st.integers(1, 5), st.integers(1, 5), st.integers(0, 50))


def _unique(rows):
    "The rows without exact repeats of an earlier (user, item, timestamp)."
    seen = set()
    return [r for r in rows if (r[0], r[1], r[3]) not in seen and not seen.add((r[0], r[1], r[3]))]


def _expected(rows):
    "Per-user raw item ids ordered by (timestamp, file order), users in numeric order."
    out = {}
    for k, (u, i, r, t) in sorted(enumerate(rows), key=lambda x: (x[1][0], x[1][3], x[0])):
        out.setdefault(str(u), []).append(str(i))
    return [out[u] for u in sorted(out, key=int)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row, min_size=1, max_size=60))
def test_udata_roundtrip(rows):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        shutil.copy(FX/"ml-100k"/"u.item", d/"u.item")
        (d/"u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
        ds, kept = load_ml100k(d), load_ml100k(d, duplicates="keep")
    unique = _unique(rows)                                    # exact repeats of (user, item, time) are dropped
    assert ds.n_interactions == len(unique) and kept.n_interactions == len(rows)
    assert ds.n_users == len({u for u, *_ in rows})
    assert raw(ds) == _expected(unique) and raw(kept) == _expected(rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row, min_size=1, max_size=60))
def test_ratings_dat_roundtrip(rows):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d/"movies.dat").write_text("".join(f"{i}::Movie {i} (199{i})::Drama\n" for i in range(1, 6)))
        (d/"ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows))
        ds = load_ml1m(d)
    assert ds.n_interactions == len(_unique(rows)) and raw(ds) == _expected(_unique(rows))


garbage = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                  min_size=1, max_size=40).filter(lambda s: s.strip() and s.count("\t") != 3)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row, max_size=5), garbage, st.data())
def test_udata_garbage_raises_dataformaterror(rows, bad, data):
    lines = [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in rows]
    pos = data.draw(st.integers(0, len(lines)))
    lines.insert(pos, bad)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        shutil.copy(FX/"ml-100k"/"u.item", d/"u.item")
        (d/"u.data").write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
        with pytest.raises(DataFormatError, match=r"u.data, line \d+"):
            load_ml100k(d)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row, max_size=5), garbage.filter(lambda s: s.count("::") != 3), st.data())
def test_ratings_dat_garbage_raises_dataformaterror(rows, bad, data):
    lines = [f"{u}::{i}::{r}::{t}" for u, i, r, t in rows]
    lines.insert(data.draw(st.integers(0, len(lines))), bad)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        shutil.copy(FX/"ml-1m"/"movies.dat", d/"movies.dat")
        (d/"ratings.dat").write_bytes(("\n".join(lines) + "\n").encode("latin-1", "replace"))
        with pytest.raises(DataFormatError, match=r"ratings.dat, line \d+"):
            load_ml1m(d)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage)
def test_behaviors_garbage_line_raises_dataformaterror(bad):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)/"mind"
        shutil.copytree(FX/"mind", d)
        with open(d/"behaviors.tsv", "ab") as f: f.write(bad.encode("utf-8") + b"\n")
        with pytest.raises(DataFormatError, match=r"behaviors.tsv, line 4"):
            load_mind(d)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=60))
def test_random_bytes_never_crash_other_ways(blob):
    "Arbitrary bytes as behaviors.tsv / an interactions JSON file: either loads or raises DataFormatError."
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        shutil.copytree(FX/"mind", d/"mind")
        (d/"mind"/"behaviors.tsv").write_bytes(blob)
        shutil.copytree(FX/"goodreads", d/"gr")
        (d/"gr"/INTER).write_bytes(gzip.compress(blob))
        for fn in (lambda: load_mind(d/"mind"), lambda: load_goodreads(d/"gr")):
            try: fn()
            except DataFormatError: pass


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2030, 1, 1)),
       st.integers(-12 * 60, 14 * 60).map(lambda m: m - m % 15))
def test_goodreads_time_matches_strptime(dt, offset_min):
    tz = timezone(timedelta(minutes=offset_min))
    s = dt.replace(microsecond=0, tzinfo=tz).strftime(NB.GOODREADS_TIME_FORMAT)
    assert NB.parse_goodreads_time(s) == int(datetime.strptime(s, NB.GOODREADS_TIME_FORMAT).timestamp())


@pytest.mark.parametrize("bad", ["", "Tue Oct 17 09:06:17 2017", "Tue Okt 17 09:06:17 -0700 2017",
                                 "Tue Oct 17 25:06:17 -0700 2017", "Tue Oct 17 09:06:17 0700 2017", "Tue Oct 17 9:6 -0700 2017"])
def test_goodreads_time_rejects(bad):
    with pytest.raises(ValueError): NB.parse_goodreads_time(bad)


def test_user_order_is_natural():
    assert sorted(["U10", "U2", "U1", "10", "9", "01", "1"], key=D._natural_key) == ["01", "1", "9", "10", "U1", "U2", "U10"]


# -------------------------------------------------------------------------------------- filtering and statistics
def test_filter_min_interactions():
    ds = load_ml100k(FX/"ml-100k")
    f, rep = filter_min_interactions(ds, 3)
    assert f.users == ["22", "196"] and rep["dropped_users"] == ["186"]
    assert rep["dropped_interactions"] == 2 and rep["dropped_items"] == []
    f, rep = filter_min_interactions(ds, 3, drop_unused_items=True)
    g, rep2 = filter_min_interactions(load_ml1m(FX/"ml-1m"), 3)
    assert g.users == ["1"] and rep2["dropped_items"] == ["4"] and g.n_items == 3
    assert raw(g) == [["1", "2", "3"]] and list(g.items.index) == [0, 1, 2]
    h, rep3 = filter_min_interactions(load_ml1m(FX/"ml-1m"), 3, drop_unused_items=False)
    assert h.n_items == 4 and rep3["dropped_items"] == []
    assert [len(t) for t in g.timestamps] == [3]
    assert g.n_interactions + rep2["dropped_interactions"] == 5


def test_stats():
    ds = load_ml100k(FX/"ml-100k")
    s = dataset_stats(ds)
    assert s["n_users"] == 3 and s["n_items"] == 5 and s["n_interactions"] == 8
    assert s["seq_len_mean"] == pytest.approx(8 / 3) and s["seq_len_median"] == 3
    assert s["sparsity"] == pytest.approx(1 - 8 / 15)
    t = stats_table(ds, filter_min_interactions(ds, 3)[0])
    assert list(t.columns) == ["before", "after"] and t.loc["n_users", "after"] == 2


def test_data_command_and_load_dataset_dir(tmp_path):
    txt = data_command("ml-100k", str(FX/"ml-100k"), min_interactions=3)
    assert "n_users" in txt and "before" in txt and "dropped" in txt
    with pytest.raises(ValueError, match="no user has at least 5 interactions"):   # an empty result is refused
        data_command("ml-100k", str(FX/"ml-100k"))
    assert load_dataset("ml-1m", FX/"ml-1m").n_interactions == 5
    assert load_dataset("mind-small", FX/"mind").n_users == 2
    assert load_dataset("goodreads-poetry", FX/"goodreads").n_items == 3
    with pytest.raises(FileNotFoundError): load_dataset("ml-1m", FX/"mind")
    with pytest.raises(FileNotFoundError): load_dataset("ml-1m", tmp_path/"nowhere")
    with pytest.raises(ValueError, match="unknown dataset"): load_dataset("ml-20m")


# ------------------------------------------------------------------------------------------- download and cache
def test_download_and_checksums(tmp_path):
    src = tmp_path/"src.bin"; src.write_bytes(b"abc")
    p = download(src.as_uri(), tmp_path/"c"/"a.bin")
    rec = json.loads((tmp_path/"c"/"checksums.json").read_text())
    assert rec["a.bin"] == DL.sha256sum(src)
    with pytest.raises(DownloadError, match="does not match"):
        download(src.as_uri(), tmp_path/"c"/"b.bin", sha256="0" * 64)
    assert not (tmp_path/"c"/"b.bin").exists()
    src.write_bytes(b"changed")                    # a later download must match the recorded checksum
    p.unlink()
    with pytest.raises(DownloadError, match="does not match"): download(src.as_uri(), p)
    with pytest.raises(DownloadError, match="could not download"): download((tmp_path/"nope").as_uri(), p)


def test_load_dataset_downloads_zip(tmp_path, monkeypatch):
    z = tmp_path/"ml-1m.zip"
    with zipfile.ZipFile(z, "w") as f:
        for p in (FX/"ml-1m").iterdir(): f.write(p, f"ml-1m/{p.name}")
    monkeypatch.setitem(DL.URLS, "ml-1m", [(z.as_uri(), "ml-1m.zip", DL.sha256sum(z))])
    monkeypatch.setenv("LANCER_CACHE", str(tmp_path/"cache"))
    assert load_dataset("ml-1m").n_interactions == 5
    assert (tmp_path/"cache"/"ml-1m"/"ml-1m"/"ratings.dat").exists()
    z.unlink()                                       # second call: from the cache, no download
    assert load_dataset("ml-1m").n_interactions == 5


def test_load_dataset_unreachable(tmp_path, monkeypatch):
    monkeypatch.setitem(DL.URLS, "mind-small", [((tmp_path/"missing.zip").as_uri(), "m.zip", None)])
    with pytest.raises(DownloadError, match="data_dir"): load_dataset("mind-small", cache_dir=tmp_path)


def test_ml100k_falls_back_to_recbole_wheel(tmp_path, monkeypatch):
    calls = []
    def fake_fetch(dest):
        calls.append(dest); shutil.copytree(FX/"recbole", dest); return dest
    monkeypatch.setitem(DL.URLS, "ml-100k", [((tmp_path/"unreachable.zip").as_uri(), "ml-100k.zip", None)])
    monkeypatch.setattr(DL, "fetch_recbole_ml100k", fake_fetch)
    with pytest.warns(UserWarning, match="RecBole"):
        ds = load_dataset("ml-100k", cache_dir=tmp_path)
    assert raw(ds) == raw(load_ml100k(FX/"ml-100k"))
    assert load_dataset("ml-100k", cache_dir=tmp_path).n_interactions == 8 and len(calls) == 1   # cached


def test_ml100k_grouplens_zip_preferred(tmp_path, monkeypatch):
    z = tmp_path/"ml-100k.zip"
    with zipfile.ZipFile(z, "w") as f:
        for p in (FX/"ml-100k").iterdir(): f.write(p, f"ml-100k/{p.name}")
    monkeypatch.setitem(DL.URLS, "ml-100k", [(z.as_uri(), "ml-100k.zip", None)])
    monkeypatch.setattr(DL, "fetch_recbole_ml100k", lambda dest: pytest.fail("should not use the wheel"))
    assert load_dataset("ml-100k", cache_dir=tmp_path/"c").n_interactions == 8


def test_real_ml100k_from_cache():
    "The full ML-100K (943 users, 1682 items, 100000 ratings) when it is already in the user cache."
    cache = DL.default_cache_dir()/"ml-100k"
    if not ((cache/"recbole"/"ml-100k.inter").exists() or (cache/"ml-100k"/"u.data").exists()):
        pytest.skip("ML-100K not in the cache (run `lancer data --dataset ml-100k` once)")
    ds = load_dataset("ml-100k")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100000)
    assert ds.items.loc[0, "title"] == "Toy Story (1995)"
    assert all((np.diff(t) >= 0).all() for t in ds.timestamps)


@pytest.mark.slow
def test_fetch_recbole_wheel(tmp_path):
    "Needs the package index (pip download); run with --slow."
    d = DL.fetch_recbole_ml100k(tmp_path/"rb")
    ds = load_recbole_atomic(d, "ml-100k")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100000)
