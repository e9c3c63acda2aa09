"""Tests for lancer.protocol: leave-one-out splits, training examples, seen items and text templates."""
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lancer.protocol import (
    TEMPLATES, Example, Split, TextTemplate, leave_one_out, seen_items, template_for, training_examples,
)


@dataclass
class Toy:
    "Minimal stand-in for SeqDataset: sequences + a catalogue."
    sequences: list
    items: pd.DataFrame


def toy(seqs, n_items=10):
    return Toy([np.asarray(s, dtype=np.int64) for s in seqs], pd.DataFrame({"raw_id": [str(i) for i in range(n_items)]}))


sequences = st.lists(st.lists(st.integers(0, 19), min_size=3, max_size=30), min_size=1, max_size=20)


def test_default_split_by_position():
    sp = leave_one_out(toy([[0, 1, 2, 3, 4, 5, 6]]), max_history=2)
    assert isinstance(sp, Split) and sp.protocol == "default" and sp.n_items == 10 and sp.max_history == 2
    assert sp.test[0].target == 6 and sp.test[0].history.tolist() == [4, 5]
    assert sp.valid[0].target == 5 and sp.valid[0].history.tolist() == [3, 4]
    assert sp.train[0].tolist() == [0, 1, 2, 3, 4]
    assert sp.test[0].history.dtype == np.int64


def test_history_shorter_than_cap():
    sp = leave_one_out(toy([[3, 4, 5]]))
    assert sp.test[0].history.tolist() == [3, 4]
    assert sp.valid[0].history.tolist() == [3]
    assert sp.train[0].tolist() == [3]
    assert training_examples(sp) == []  # a 1-item training part has nothing to predict from
    assert training_examples(sp, all_positions=False) == []


def test_published_protocol():
    sp = leave_one_out(toy([[0, 1, 2, 3, 4, 5, 6]]), max_history=3, protocol="published")
    assert sp.valid is sp.test
    assert sp.train[0].tolist() == [0, 1, 2, 3, 4, 5]
    (ex,) = training_examples(sp, all_positions=False)
    assert (ex.user, ex.history.tolist(), ex.target) == (0, [2, 3, 4], 5)
    assert seen_items(sp, "test")[0].tolist() == [0, 1, 2, 3, 4, 5]


def test_split_does_not_alias_input():
    seq = np.array([0, 1, 2, 3, 4])
    sp = leave_one_out(toy([seq]))
    sp.train[0][0] = 9
    sp.test[0].history[0] = 9
    assert seq.tolist() == [0, 1, 2, 3, 4]


def test_n_items_attribute_preferred():
    @dataclass
    class WithN:
        sequences: list
        n_items: int

    assert leave_one_out(WithN([np.arange(4)], 4)).n_items == 4
    with pytest.raises(TypeError, match="n_items"):
        leave_one_out(type("NoItems", (), {"sequences": [np.arange(4)]})())


def test_errors_name_the_user():
    ds = toy([[0, 1, 2], [0, 1]])
    ds.users = ["a", "b"]
    with pytest.raises(ValueError, match=r"user 1 \('b'\) has a sequence of length 2"):
        leave_one_out(ds)
    with pytest.raises(ValueError, match="user 0 has item ids outside"):
        leave_one_out(toy([[0, 1, 10]]))
    with pytest.raises(ValueError, match="protocol"):
        leave_one_out(toy([[0, 1, 2]]), protocol="x")
    with pytest.raises(ValueError, match="max_history"):
        leave_one_out(toy([[0, 1, 2]]), max_history=0)
    with pytest.raises(ValueError, match="which"):
        seen_items(leave_one_out(toy([[0, 1, 2]])), "train")


@settings(max_examples=50, deadline=None)
@given(sequences, st.integers(1, 12))
def test_split_properties(seqs, max_history):
    ds = toy(seqs, n_items=20)
    sp = leave_one_out(ds, max_history=max_history)
    for u, s in enumerate(seqs):
        assert sp.test[u].target == s[-1] and sp.valid[u].target == s[-2]
        assert sp.test[u].history.tolist() == s[:-1][-max_history:]
        assert sp.valid[u].history.tolist() == s[:-2][-max_history:]
        assert sp.train[u].tolist() == s[:-2]
        assert set(seen_items(sp, "test")[u].tolist()) == set(s[:-1])
        assert set(seen_items(sp, "valid")[u].tolist()) == set(s[:-2])
    ex = training_examples(sp)
    assert len(ex) == sum(len(s) - 3 for s in seqs)  # positions 1..n-3 of each training part
    expected = [(u, s[max(0, t - max_history) : t], s[t]) for u, s in enumerate(seqs) for t in range(1, len(s) - 2)]
    assert [(e.user, e.history.tolist(), e.target) for e in ex] == expected
    last = training_examples(sp, all_positions=False)
    assert [e.target for e in last] == [s[-3] for s in seqs if len(s) > 3]


def test_templates_cover_datasets_and_published_openers():
    assert set(TEMPLATES) == {"ml-100k", "ml-1m", "mind-small", "goodreads-poetry"}
    assert template_for("ml-1m").opener == "A user watched sequence of movies : "
    assert template_for("mind-small").opener == "News reading sequence: "
    assert template_for("goodreads-poetry").opener == "A user liked the following books: "
    assert all(t.separator == " -> " and t.max_item_tokens == 32 for t in TEMPLATES.values())
    assert template_for("mind-small").display == "{category} : {title}"
    with pytest.raises(KeyError, match="known: .*ml-100k"):
        template_for("nope")


def test_goodreads_knowledge_text_and_truncation():
    t = replace(template_for("goodreads-poetry"), max_field_words=3)
    book = pd.Series({"title": "Odes", "genres": "poetry, classics", "description": "one two three four five",
                      "authors": "Keats", "average_rating": "4.1", "year": ""})
    context, target = t.knowledge_text(book)
    assert context == ("genres : poetry, classics description : one two three authors : Keats "
                       "average_rating : 4.1 title : ")
    assert target == "Odes"
    assert t.display_string(book) == "poetry, classics : Odes"


def test_missing_values_and_custom_template():
    t = TextTemplate("Seq: ", separator=" | ", display="{title}", knowledge_fields=("kind",))
    assert t.knowledge_text({"title": "x", "kind": None}) == ("title : ", "x")
    assert t.knowledge_text({"title": "x", "kind": float("nan")}) == ("title : ", "x")
    assert t.sequence_text(["a", "b"], "c") == ("Seq: a | b | ", "c")
    assert t.sequence_text(["a"]) == ("Seq: a | ", "")
    with pytest.raises(KeyError, match="no field 'kind'"):
        t.knowledge_text({"title": "x"})
    with pytest.raises(ValueError, match="at least one"):
        t.sequence_text([])


def test_display_strings_of_catalogue():
    items = pd.DataFrame({"raw_id": ["1", "2"], "title": ["A (1990)", "B (1991)"], "genres": ["Drama", ""],
                          "year": ["1990", "1991"]})
    assert template_for("ml-100k").display_strings(items) == ["Drama : A (1990)", " : B (1991)"]


def test_prompt_plus_target_is_the_full_sequence_text():
    t = template_for("ml-100k")
    names = ["Drama : A", "Comedy : B", "Drama : C"]
    prompt, target = t.sequence_text(names[:-1], names[-1])
    assert prompt + target == t.opener + " -> ".join(names)
    assert prompt.endswith(t.separator)


def test_example_fields():
    e = Example(0, np.array([1, 2]), 3)
    assert (e.user, e.history.tolist(), e.target) == (0, [1, 2], 3)


FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name,module,loader,folder", [
    ("ml-100k", "lancer.datasets", "load_ml100k", "ml-100k"), ("ml-1m", "lancer.datasets", "load_ml1m", "ml-1m"),
    ("mind-small", "lancer.news_and_books", "load_mind", "mind"),
    ("goodreads-poetry", "lancer.news_and_books", "load_goodreads", "goodreads"),
])
def test_templates_and_split_on_fixture_datasets(name, module, loader, folder):
    "Every item of each dataset's fixture has the fields its template needs; the split works on a real SeqDataset."
    data = pytest.importorskip(module)
    ds = getattr(data, loader)(FIXTURES / folder)
    t = template_for(name)
    names = t.display_strings(ds.items)
    assert len(names) == ds.n_items and all(" : " in s for s in names)
    for _, row in ds.items.iterrows():
        context, target = t.knowledge_text(row)
        assert context.endswith("title : ") and target == " ".join(str(row["title"]).split())
    ds3, _ = pytest.importorskip("lancer.data").filter_min_interactions(ds, 3)
    sp = leave_one_out(ds3)
    assert sp.n_users == ds3.n_users and sp.n_items == ds3.n_items  # filtering may also re-index the catalogue
    names = t.display_strings(ds3.items)
    prompt, target = t.sequence_text([names[i] for i in sp.test[0].history], names[sp.test[0].target])
    assert prompt.startswith(t.opener) and prompt.endswith(" -> ") and target == names[sp.test[0].target]
