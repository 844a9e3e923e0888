"""Loaders against the known figures of the datasets README, the Outcomes type, splits."""
from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest

from optllm.data import Outcomes, load, load_long, load_wide, split, synthetic
from optllm.errors import OptLLMError


def _acc(o: Outcomes) -> dict[str, float]:
    return dict(zip(o.models, o.model_accuracy()))


def test_overruling_known_figures(overruling: Outcomes) -> None:
    assert (overruling.n, overruling.m) == (2160, 12)
    acc, tot = _acc(overruling), dict(zip(overruling.models, overruling.model_total_cost()))
    assert acc["gpt-4"] == pytest.approx(0.950, abs=5e-4)
    assert tot["gpt-4"] == pytest.approx(19.33, abs=0.01)  # README: $19.33
    assert acc["text-davinci-002"] == pytest.approx(0.949, abs=5e-4)
    assert acc["gpt-3.5-turbo"] == pytest.approx(0.904, abs=5e-4)
    assert overruling.models[overruling.best_model()] == "gpt-4"
    assert overruling.texts is not None and "overruling" in overruling.texts[0]


def test_bundled_demo_equals_overruling(demo: Outcomes, overruling: Outcomes) -> None:
    np.testing.assert_array_equal(demo.correct, overruling.correct)
    np.testing.assert_allclose(demo.cost, overruling.cost)


def test_demo_always_available(demo: Outcomes) -> None:
    assert (demo.n, demo.m) == (2160, 12)


def test_logparsing_matches_readme(require_data) -> None:
    require_data("log_parsing")
    o = load("logparsing")
    assert (o.n, o.m) == (24000, 8)
    expected = {"Mixtral_8x7B": 0.641, "Yi_34B": 0.558, "llama2_13b": 0.543, "llama2_70b": 0.481,
                "llama2_7b": 0.408, "Yi_6B": 0.346, "j2_ultra": 0.255, "j2_mid": 0.169}
    acc = _acc(o)
    for m, a in expected.items():
        assert acc[m] == pytest.approx(a, abs=6e-4), m
    assert set(o.metadata["completion_tokens_estimated"]) == {"j2_mid", "j2_ultra"}
    assert (o.cost > 0).all()


def test_logparsing_subset_and_own_prices(require_data, tmp_path) -> None:
    require_data("log_parsing")
    o = load("logparsing:Apache,hpc")
    assert o.n == 4000 and o.metadata["systems"] == ["Apache", "HPC"]
    prices = tmp_path / "p.json"
    prices.write_text('{"Mixtral_8x7B": {"column_prefix": "Nous_Mixtral", "cost_input": 1e-6, "cost_output": 2e-6}}')
    one = load("logparsing:Apache", prices=prices)
    assert one.models == ("Mixtral_8x7B",)
    np.testing.assert_allclose(one.cost[:, 0], one.prompt_tokens[:, 0] * 1e-6 + one.completion_tokens[:, 0] * 2e-6)
    with pytest.raises(OptLLMError, match="unknown log-parsing system"):
        load("logparsing:Nope")


def test_routerbench_reports_drops(require_data) -> None:
    require_data("routerbench")
    o = load("routerbench")
    assert o.m == 11
    d = o.metadata["dropped"]
    assert d["nan_cells"] == 154 and d["nan_correctness_rows"] > 0
    assert d["repeated_sample_ids_in_files"] > 0
    assert len(set(o.query_ids)) == o.n
    assert o.n == 1039 + 445 + 299 + 128 + 887 + 380 - d["nan_correctness_rows"] - d["duplicate_sample_id_rows"]
    mbpp = load("routerbench:mbpp")
    assert mbpp.n == 299 + 128 and mbpp.metadata["dropped"]["nan_cells"] == 0


@pytest.mark.parametrize("task,n", [("gsm8k", 1319), ("mmlu", 14042)])
def test_routellm(require_data, task: str, n: int) -> None:
    require_data("routellm")
    o = load(f"routellm:{task}")
    assert (o.n, o.m) == (n, 2)
    assert (o.cost > 0).all()
    gpt4 = o.model_index("gpt-4-1106-preview")
    assert o.model_total_cost()[gpt4] > o.model_total_cost()[1 - gpt4]


def test_tokenizer_touches_no_network(monkeypatch) -> None:
    from optllm import cost as tokens  # the loaders count tokens with optllm.cost.count_tokens

    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    tokens.get_encoding.cache_clear()
    assert tokens.count_tokens(["hello world", ""]).tolist() == [2, 0]
    assert tokens.count_tokens(["hello world"], "cl100k_base").tolist() == [2]  # official name: offline copy
    with pytest.raises(OptLLMError, match="not available offline"):
        tokens.get_encoding("o200k_base")


def test_long_format_roundtrip(tmp_path) -> None:
    rows = [("q1", "a", 1, 0.1), ("q1", "b", 0, 0.2), ("q2", "a", 0, 0.1), ("q2", "b", 1, 0.3)]
    df = pd.DataFrame(rows, columns=["query_id", "model", "correct", "cost"])
    for ext in ("csv", "jsonl", "parquet"):
        path = tmp_path / f"x.{ext}"
        {"csv": lambda p: df.to_csv(p, index=False),
         "jsonl": lambda p: df.to_json(p, orient="records", lines=True),
         "parquet": lambda p: df.to_parquet(p)}[ext](path)
        o = load(str(path))
        assert o.models == ("a", "b")
        np.testing.assert_array_equal(o.correct, [[1, 0], [0, 1]])
        np.testing.assert_allclose(o.cost, [[0.1, 0.2], [0.1, 0.3]])


def test_long_format_missing_pairs_reported(tmp_path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("query_id,model,correct,cost\nq1,a,1,0.1\nq1,b,0,0.2\nq2,a,1,0.1\n")
    with pytest.raises(OptLLMError, match="1 of 2 queries lack some models"):
        load(str(path))
    o = load_long(path, on_missing="drop")
    assert o.n == 1 and o.metadata["dropped"]["incomplete_queries"] == 1


def test_wide_format_custom_patterns(tmp_path) -> None:
    path = tmp_path / "w.csv"
    path.write_text("id,prompt,acc:small,usd:small,acc:big,usd:big\n1,hi,0,0.01,1,0.1\n2,yo,1,0.01,1,0.1\n")
    o = load_wide(path, correct_pattern="acc:{model}", cost_pattern="usd:{model}")
    assert o.models == ("small", "big") and o.texts.tolist() == ["hi", "yo"]
    assert o.query_ids.tolist() == [1, 2]


@pytest.mark.parametrize(
    "body,match",
    [
        ("query_id,model,correct,cost\nq1,a,1,-0.1\n", r"row 2, column 'cost': negative cost"),
        ("query_id,model,correct,cost\nq1,a,1,\n", r"row 2, column 'cost': cost is missing"),
        ("query_id,model,correct,cost\nq1,a,yes,0.1\n", r"row 2, column 'correct'.*not a number"),
        ("query_id,model,correct\nq1,a,1\n", r"missing column\(s\) \['cost'\]"),
        ("query_id,model,correct,cost\nq1,a,1,0.1\nq1,a,0,0.1\n", r"row 3: query 'q1' has model 'a' twice"),
        ("a,b\n1,2\n", r"no model columns found"),
        ("x_cost,x\n0.1,2\n", r"correct must be in \[0, 1\]"),
        ('query_id,model\n"unterminated\n', r"cannot read|missing column"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, body: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(OptLLMError, match=match) as e:
        load(str(path))
    assert str(path) in str(e.value)


def test_missing_and_unknown() -> None:
    with pytest.raises(OptLLMError, match="file not found"):
        load("/nonexistent/file.csv")
    with pytest.raises(OptLLMError, match="unknown dataset 'nosuch'"):
        load("nosuch")


def test_outcomes_validation() -> None:
    ok = dict(query_ids=np.arange(2), models=("a", "b"), correct=np.ones((2, 2)), cost=np.ones((2, 2)))
    Outcomes(**ok)
    with pytest.raises(OptLLMError, match="duplicate model names"):
        Outcomes(**{**ok, "models": ("a", "a")})
    with pytest.raises(OptLLMError, match="duplicate query ids"):
        Outcomes(**{**ok, "query_ids": np.array([1, 1])})
    with pytest.raises(OptLLMError, match="cost is NaN"):
        Outcomes(**{**ok, "cost": np.array([[1, np.nan], [1, 1]])})
    with pytest.raises(OptLLMError, match="negative cost"):
        Outcomes(**{**ok, "cost": np.array([[1, -1], [1, 1]])})
    with pytest.raises(OptLLMError, match="shape"):
        Outcomes(**{**ok, "correct": np.ones((3, 2))})


def test_subset_select_summary(demo: Outcomes) -> None:
    sub = demo.subset(np.arange(10)).select_models(["gpt-4", "gptj_6B"])
    assert (sub.n, sub.models) == (10, ("gpt-4", "gptj_6B"))
    np.testing.assert_array_equal(sub.correct[:, 0], demo.correct[:10, demo.model_index("gpt-4")])
    s = demo.summary()
    assert set(s) >= {"name", "n_queries", "models", "oracle", "best_model"}
    assert s["oracle"]["accuracy"] >= max(r["accuracy"] for r in s["models"])
    a, acc, cost = demo.oracle()
    assert acc == pytest.approx(demo.correct[np.arange(demo.n), a].mean())


def test_split_deterministic_and_disjoint() -> None:
    s1, s2, s3 = split(1000, 0.01, 0.01, seed=3), split(1000, 0.01, 0.01, seed=3), split(1000, 0.01, 0.01, seed=4)
    np.testing.assert_array_equal(s1.train, s2.train)
    assert not np.array_equal(s1.train, s3.train)
    assert (len(s1.train), len(s1.val), len(s1.test)) == (10, 10, 980)
    allidx = np.concatenate([s1.train, s1.val, s1.test])
    assert np.array_equal(np.sort(allidx), np.arange(1000))
    byc = split(1000, 25, 5, seed=0)
    assert (len(byc.train), len(byc.val)) == (25, 5)
    with pytest.raises(OptLLMError, match="leave no queries"):
        split(10, 5, 5)


def test_synthetic_realistic() -> None:
    o = synthetic(2000, 6, seed=1)
    assert (o.n, o.m) == (2000, 6)
    assert set(np.unique(o.correct)) <= {0.0, 1.0}
    assert (o.cost > 0).all()
    np.testing.assert_array_equal(o.correct, synthetic(2000, 6, seed=1).correct)
    p = synthetic(100, 12, seed=0, labels=False)
    assert 0 < p.correct.min() and p.correct.max() < 1
    assert load("synthetic:500x4").m == 4


def test_wide_loader_reads_paper_layout_by_path(require_data, overruling: Outcomes) -> None:
    require_data("overruling/overruling.csv")
    from optllm.data import data_dir

    o = load(str(data_dir() / "overruling" / "overruling.csv"))
    assert o.models == overruling.models
    np.testing.assert_array_equal(o.correct, overruling.correct)
