"""Texts left in their Parquet file (`optllm.data.texts.DiskTexts`): the view behaves as the
same texts in memory would, a Parquet dataset runs to the same plan as its CSV twin, and the
chunked synthetic writer gives a loadable, reproducible world."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optllm.data import load, synthetic
from optllm.data.synthetic import write_synthetic
from optllm.data.texts import DiskTexts, text_list
from optllm.errors import OptLLMError


def _write(path, texts, row_group):
    pq.write_table(pa.table({"query": pa.array(texts, type=pa.string())}), path, row_group_size=row_group)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), row_group=st.integers(1, 17), data=st.data())
def test_a_view_reads_what_the_array_holds(tmp_path_factory, n, row_group, data):
    texts = [None if i % 11 == 5 else f"t{i} " + "é" * (i % 3) for i in range(n)]
    want = np.array(["" if t is None else t for t in texts], dtype=object)
    path = tmp_path_factory.mktemp("dt") / "t.parquet"
    _write(path, texts, row_group)
    d = DiskTexts(path, "query")
    assert len(d) == n and d.tolist() == want.tolist() and list(d) == want.tolist()
    idx = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=40)), dtype=np.int64)
    sub = d[idx]
    assert isinstance(sub, DiskTexts) and sub.tolist() == want[idx].tolist()
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    assert d[mask].tolist() == want[mask].tolist()
    lo, hi = sorted(data.draw(st.lists(st.integers(0, n), min_size=2, max_size=2)))
    assert d[lo:hi].tolist() == want[lo:hi].tolist()
    if idx.size:  # a view of a view, and one text
        inner = np.array(data.draw(st.lists(st.integers(0, idx.size - 1), max_size=10)), dtype=np.int64)
        assert sub[inner].tolist() == want[idx][inner].tolist()
        assert sub[-1] == want[idx][-1] and sub[0] == want[idx][0]
    size = data.draw(st.integers(1, 25))
    chunks = list(d.chunks(size))
    assert [t for c in chunks for t in c] == want.tolist() and all(len(c) <= size for c in chunks)


def test_bad_rows_and_files_are_clear(tmp_path):
    path = tmp_path / "t.parquet"
    _write(path, ["a", "b", "c"], 2)
    d = DiskTexts(path, "query")
    with pytest.raises(IndexError):
        d[3]
    with pytest.raises(IndexError):
        d[np.array([0, 7])]
    with pytest.raises(OptLLMError, match="rows out of range"):
        DiskTexts(path, "query", rows=np.array([3]))
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(OptLLMError, match="cannot read as Parquet"):
        DiskTexts(bad, "query")
    with pytest.raises(OptLLMError, match="no text column 'nope'"):
        DiskTexts(path, "nope")
    d.tolist()
    assert pickle.loads(pickle.dumps(d))._cache is None and d._cache is not None  # a pickle carries no texts


def _twins(tmp_path, n=1500, m=4):
    d = synthetic(n=n, m=m, texts=True, seed=3)
    df = pd.DataFrame({"query_id": d.query_ids, "query": d.texts})
    for k, name in enumerate(d.models):
        df[name] = d.correct[:, k]
        df[f"{name}_cost"] = d.cost[:, k]
    df.to_parquet(tmp_path / "w.parquet", row_group_size=128)
    df.to_csv(tmp_path / "w.csv", index=False)
    return load(tmp_path / "w.parquet"), load(tmp_path / "w.csv")


def test_a_parquet_dataset_leaves_its_texts_on_disk_and_plans_as_its_csv_twin(tmp_path):
    from optllm.evaluate.pipeline import RunConfig, run_pipeline
    from optllm.planning.core import predict_in_chunks
    from optllm.predict import inputs_of, make_predictor

    pq_data, csv_data = _twins(tmp_path)
    assert isinstance(pq_data.texts, DiskTexts) and isinstance(csv_data.texts, np.ndarray)
    assert text_list(pq_data.texts) == text_list(csv_data.texts)
    part = pq_data.subset(np.arange(0, pq_data.n, 3))
    assert isinstance(part.texts, DiskTexts) and part.texts.tolist() == csv_data.texts[::3].tolist()
    assert isinstance(inputs_of(part), list) and inputs_of(part, stream=True) is part.texts
    # the chunks of a DiskTexts predict what the same texts in memory predict
    model = make_predictor("logistic", seed=0)
    tr = csv_data.subset(np.arange(200))
    model.fit(inputs_of(tr), tr.correct, models=tr.models)
    a, _ = predict_in_chunks(model, part.texts, rows=97, with_std=False)
    b, _ = predict_in_chunks(model, inputs_of(part), rows=97, with_std=False)
    np.testing.assert_array_equal(a, b)
    ra, rb = run_pipeline(pq_data, RunConfig(seed=1)), run_pipeline(csv_data, RunConfig(seed=1))
    np.testing.assert_array_equal(ra.planned.p, rb.planned.p)
    assert ra.realised == rb.realised


def test_a_parquet_text_column_can_be_named_and_must_exist(tmp_path):
    pq_data, _ = _twins(tmp_path, n=60, m=2)
    df = pd.read_parquet(tmp_path / "w.parquet").rename(columns={"query": "body"})
    df.to_parquet(tmp_path / "named.parquet")
    from optllm.data import load_wide

    d = load_wide(tmp_path / "named.parquet", text_column="body")
    assert isinstance(d.texts, DiskTexts) and d.texts.tolist() == pq_data.texts.tolist()
    with pytest.raises(OptLLMError, match="text column 'nope' not found"):
        load_wide(tmp_path / "named.parquet", text_column="nope")
    assert load(tmp_path / "named.parquet").texts is None  # no known text column: no texts


def test_the_chunked_synthetic_writer_gives_a_reproducible_loadable_world(tmp_path):
    seen = []
    write_synthetic(str(tmp_path / "a.parquet"), 2500, 5, seed=4, chunk_rows=1000, row_group=300, progress=seen.append)
    write_synthetic(str(tmp_path / "b.parquet"), 2500, 5, seed=4, chunk_rows=1000, row_group=300)
    assert seen == [1000, 2000, 2500]
    a, b = load(tmp_path / "a.parquet"), load(tmp_path / "b.parquet")
    assert a.n == 2500 and a.models == synthetic(n=10, m=5, seed=4).models
    np.testing.assert_array_equal(a.query_ids, np.arange(2500))
    np.testing.assert_array_equal(a.cost, b.cost)
    assert a.texts.tolist() == b.texts.tolist() and set(np.unique(a.correct)) <= {0.0, 1.0}
    assert pq.ParquetFile(tmp_path / "a.parquet").metadata.num_row_groups == 4 + 4 + 2  # 300-row groups per chunk
    # the models are synthetic(seed)'s: the same price per token (cost / tokens ratio across models)
    ref = synthetic(n=50, m=5, seed=4)
    np.testing.assert_allclose(np.median(a.cost / a.cost[:, :1], axis=0), np.median(ref.cost / ref.cost[:, :1], axis=0),
                               rtol=0.1)
    with pytest.raises(OptLLMError, match="at least 2 queries"):
        write_synthetic(str(tmp_path / "c.parquet"), 1, 5)
    assert not (tmp_path / "c.parquet").exists()


def test_a_shuffled_view_reads_each_row_group_once(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    _write(path, [f"t{i}" for i in range(400)], 10)  # 40 row groups
    reads = []
    real = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", lambda self, g, **kw: reads.append(g) or real(self, g, **kw))
    perm = np.random.default_rng(0).permutation(400)
    view = DiskTexts(path, "query")[perm]
    assert not view.in_file_order and list(view) == [f"t{i}" for i in perm]
    assert sorted(reads) == list(range(40))
    reads.clear()
    assert [t for c in DiskTexts(path, "query")[np.sort(perm[:200])].chunks(7) for t in c] == [
        f"t{i}" for i in np.sort(perm[:200])]
    assert sorted(set(reads)) == sorted(reads)  # in file order: each group read once too, a chunk at a time


def test_parquet_loads_as_csv_does_where_texts_cannot_stay_on_disk(tmp_path):
    from optllm.data import load_wide

    df = pd.DataFrame({"query_id": ["p", "q", "r"], "query": [1.0, 2.5, 3.0], "a": [1, 0, 1], "a_cost": [1.0, 2, 3],
                       "b": [0, 0, 1], "b_cost": [0.5, 0.5, 0.5]})
    df.to_parquet(tmp_path / "num.parquet")
    df.to_csv(tmp_path / "num.csv", index=False)
    for kw in ({}, {"text_column": "query_id"}, {"id_column": "query"}):
        a, b = load_wide(tmp_path / "num.parquet", **kw), load_wide(tmp_path / "num.csv", **kw)
        assert not isinstance(a.texts, DiskTexts), kw  # a number column, or the ids: read as a CSV reads it
        assert text_list(a.texts) == text_list(b.texts) and a.query_ids.astype(str).tolist() == b.query_ids.astype(
            str).tolist(), kw
    idx = df.drop(columns=["query"]).rename(columns={"query_id": "query"}).set_index("query")
    idx.to_parquet(tmp_path / "index.parquet")  # an index named like a text column is not the texts
    assert load(tmp_path / "index.parquet").texts is None


def test_a_replaced_file_is_refused_not_read(tmp_path):
    path = tmp_path / "t.parquet"
    _write(path, ["a", "b", "c"], 2)
    d = DiskTexts(path, "query")
    with pytest.raises(TypeError):
        d[True]
    _write(path, ["x", "y", "z", "w"], 2)
    with pytest.raises(OptLLMError, match="changed since it was loaded"):
        d.tolist()
    with pytest.raises(OptLLMError, match="changed since it was loaded"):
        d[np.array([0])]  # a sub-view too: it would index the new file with the old rows


def test_errors_name_the_row_as_the_file_numbers_it(tmp_path):
    """A bad cell in table row 5 (0-based): line 7 of a CSV (after its header), record 6 of a
    Parquet or JSONL file."""
    df = pd.DataFrame({"prompt": [f"p{i}" for i in range(8)], "a": [1] * 8, "a_cost": [0.1] * 8,
                       "b": [0] * 8, "b_cost": [0.2] * 8})
    df.loc[5, "b_cost"] = -0.01
    df.to_csv(tmp_path / "w.csv", index=False)
    df.to_parquet(tmp_path / "w.parquet")
    df.to_json(tmp_path / "w.jsonl", orient="records", lines=True)
    for name, row in (("w.csv", 7), ("w.parquet", 6), ("w.jsonl", 6)):
        with pytest.raises(OptLLMError, match=rf"row {row}, column 'b_cost': negative cost -0.01"):
            load(tmp_path / name)


def test_a_model_column_without_its_cost_is_named_not_dropped_silently(tmp_path):
    from typer.testing import CliRunner

    from optllm.cli import app
    from optllm.data.wide import wide_notes

    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"prompt": [f"q {i % 7} {i}" for i in range(n)], "small": rng.integers(0, 2, n),
                       "small_cost": 0.1, "mid": rng.integers(0, 2, n), "large": rng.integers(0, 2, n),
                       "large_cost": 1.0, "length": rng.integers(5, 90, n)})
    for name in ("w.csv", "w.parquet"):
        (df.to_csv if name.endswith("csv") else df.to_parquet)(tmp_path / name, index=False)
        d = load(tmp_path / name)
        assert d.models == ("small", "large") and d.metadata["unpaired_columns"] == ["mid"]  # not 'length'
        assert len(wide_notes(d)) == 1 and "'mid' looks like a model's correctness" in wide_notes(d)[0]
    r = CliRunner().invoke(app, ["describe", str(tmp_path / "w.parquet")])
    assert r.exit_code == 0 and "column 'mid' looks like a model's correctness" in r.output
    assert load("demo").metadata.get("unpaired_columns") is None  # the bundled data: nothing to say
