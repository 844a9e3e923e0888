"""Model catalogue validation, offline token counting, output-length model, cost matrix."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optllm.cost import (
    Catalogue, ModelSpec, count_tokens, estimate_costs, fit_output_tokens, load_catalogue,
    observed_completion_tokens, offline_encodings, parse_catalogue, prompt_tokens, resolve_tokenizer,
)
from optllm.data import Outcomes
from optllm.errors import OptLLMError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "models.yaml"


def cat(*models: dict, **defaults) -> Catalogue:
    return parse_catalogue({"defaults": defaults, "models": list(models)}, "models.yaml")


def m(name: str, inp: float = 1.0, out: float = 2.0, **kw) -> dict:
    return {"name": name, "input_per_million": inp, "output_per_million": out, **kw}


# ---------------------------------------------------------------- catalogue
def test_example_catalogue_loads_and_is_documented() -> None:
    c = load_catalogue(EXAMPLE)
    assert len(c) == 12 and "gpt-4" in c
    g4 = c["gpt-4"]
    assert g4.input_price == pytest.approx(30e-6) and g4.output_price == pytest.approx(60e-6)
    assert not g4.approximate_tokens and g4.encoding == "cl100k_base_offline"
    assert c["j1-jumbo"].per_request == 0.005 and c["j1-jumbo"].approximate_tokens
    assert c["gptj_6B"].api_key_env == "LITELLM_API_KEY"  # from defaults
    text = EXAMPLE.read_text()
    for field in ModelSpec.model_fields:
        assert field in text, f"examples/models.yaml does not document {field!r}"


def test_yaml_and_toml_and_mapping_forms(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("models:\n  small: {input_per_million: 0.1, output_per_million: 0.2}\n"
                 "  big:\n    input_per_million: 5\n    output_per_million: 15\n    context: 1000\n")
    t = tmp_path / "c.toml"
    t.write_text('[defaults]\nbase_url = "http://127.0.0.1:9/v1"\n\n[[models]]\nname = "small"\n'
                 'input_per_million = 0.1\noutput_per_million = 0.2\n')
    cy, ct = load_catalogue(y), load_catalogue(t)
    assert cy.names == ("small", "big") and cy["big"].context == 1000
    assert ct["small"].base_url == "http://127.0.0.1:9/v1"
    assert cy["small"].model_id == "small"


@pytest.mark.parametrize("entry, field, words", [
    (m("a", inp=-1), "input_per_million", "greater than or equal to 0"),
    (m("a", tokeniser="x"), "tokeniser", "unknown field"),
    ({"name": "a", "input_per_million": 1}, "output_per_million", "missing"),
    (m("a", tokenizer="o200k_base"), "tokenizer", "not available offline"),
    (m("a", api_key_env="sk-abcdef123"), "api_key_env", "looks like an API key"),
    (m("a", api_key_env="MY KEY"), "api_key_env", "not an environment variable name"),
    (m("a", base_url="localhost:8000"), "base_url", "not an http(s) URL"),
    (m("a", context=100, max_output_tokens=200), "max_output_tokens", "below the context limit"),
    (m("a", rpm=0), "rpm", "greater than 0"),
    (m("a", inp="cheap"), "input_per_million", "valid number"),
    (m("a", params={"messages": []}), "params", "set by optllm"),
])
def test_errors_name_file_model_and_field(entry: dict, field: str, words: str) -> None:
    with pytest.raises(OptLLMError) as e:
        cat(entry)
    msg = str(e.value)
    assert msg.startswith("models.yaml: model 'a'") and f"field {field!r}" in msg and words in msg
    assert "\n" not in msg
    assert "sk-abcdef123" not in msg  # a key pasted by mistake is never echoed


def test_typo_inside_batch_lists_the_tiers_fields() -> None:
    with pytest.raises(OptLLMError) as e:
        cat(m("a", batch={"discont": 0.5}))
    msg = str(e.value)
    assert "field 'batch.discont'" in msg and "allowed: input_per_million, output_per_million, discount" in msg
    assert "max_output_tokens" not in msg  # the model's own fields are not the ones to choose from there


def test_structural_errors(tmp_path: Path) -> None:
    with pytest.raises(OptLLMError, match="duplicate model name"):
        cat(m("a"), m("a"))
    with pytest.raises(OptLLMError, match=r"model #2, field 'name'"):
        cat(m("a"), {"input_per_million": 1, "output_per_million": 1})
    with pytest.raises(OptLLMError, match="unknown top-level"):
        parse_catalogue({"models": [m("a")], "model": []}, "x.yaml")
    with pytest.raises(OptLLMError, match="'models' is empty"):
        parse_catalogue({"models": []}, "x.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n  - name: a\n")
    with pytest.raises(OptLLMError, match=r"bad.yaml: invalid YAML \(line"):
        load_catalogue(bad)
    with pytest.raises(OptLLMError, match="catalogue file not found"):
        load_catalogue(tmp_path / "missing.yaml")
    with pytest.raises(OptLLMError, match="unknown catalogue type"):
        (tmp_path / "c.ini").write_text("x")
        load_catalogue(tmp_path / "c.ini")


def test_select_and_keys() -> None:
    c = cat(m("a", api_key_env="KEY_A"), m("b", api_key_env="KEY_B"), m("local"))
    with pytest.raises(OptLLMError, match=r"model\(s\) \['zzz'\] used in the labels are not in the catalogue"):
        c.select(["a", "zzz"])
    assert c.select(["b", "a"]).names == ("b", "a")
    with pytest.raises(OptLLMError) as e:
        c.check_keys({"KEY_A": "secret"})
    assert "KEY_B (model 'b')" in str(e.value) and "KEY_A" not in str(e.value)
    keys = c.check_keys({"KEY_A": "x", "KEY_B": "y"})
    assert keys == {"a": "x", "b": "y", "local": "not-needed"}


# ---------------------------------------------------------------- tokens
def test_tokenizer_resolution_is_offline_only() -> None:
    assert "cl100k_base_offline" in offline_encodings()
    assert "o200k_base" not in offline_encodings() and "cl100k_base" not in offline_encodings()
    assert resolve_tokenizer("cl100k_base", "x").encoding == "cl100k_base_offline"
    assert not resolve_tokenizer("cl100k_base", "x").approximate
    assert not resolve_tokenizer(None, "gpt-4").approximate  # known OpenAI id, cl100k offline
    g4o = resolve_tokenizer(None, "gpt-4o")  # o200k_base: not offline -> approximate
    assert g4o.approximate and g4o.encoding == "cl100k_base_offline" and "o200k_base" in g4o.note
    assert resolve_tokenizer(None, "my-llama").approximate
    with pytest.raises(ValueError, match="would download"):
        resolve_tokenizer("o200k_base", "gpt-4o")
    with pytest.raises(OptLLMError, match="not available offline"):
        count_tokens(["hello"], "o200k_base")


def test_count_and_prompt_tokens() -> None:
    n = count_tokens(["hello world", "", "a" * 40])
    assert n.tolist()[:2] == [2, 0] and n[2] > 1
    c = cat(m("a", prompt_overhead_tokens=7), m("b", prompt_overhead_tokens=0))
    pt = prompt_tokens(["hello world", ""], c)
    assert pt.tolist() == [[9.0, 2.0], [7.0, 0.0]]


# ---------------------------------------------------------------- output lengths and costs
def _outcomes(n: int, models: tuple[str, ...], completion: np.ndarray | None, cost: np.ndarray | None = None,
              texts: list[str] | None = None) -> Outcomes:
    return Outcomes(query_ids=np.arange(n), models=models, correct=np.ones((n, len(models))),
                    cost=np.zeros((n, len(models))) if cost is None else cost,
                    completion_tokens=completion, texts=texts)


def test_output_tokens_from_labels_and_fallbacks() -> None:
    c = cat(m("a", max_output_tokens=100), m("b", expected_output_tokens=40, max_output_tokens=100),
            m("c", max_output_tokens=64))
    comp = np.column_stack([np.arange(1, 101, dtype=float), np.full(100, np.nan), np.full(100, np.nan)])
    o = fit_output_tokens(c, comp, quantile=0.9)
    assert o.median[0] == pytest.approx(50.5) and o.upper[0] == pytest.approx(np.quantile(np.arange(1, 101), 0.9))
    assert o.source[0] == "completion_tokens"
    assert o.mean[1] == 40 and o.source[1] == "catalogue expected_output_tokens" and o.upper[1] <= 100
    assert o.mean[2] == o.upper[2] == 64 and "assumed max_output_tokens" in o.source[2]
    mu, up, var = o.predict(np.zeros((3, 3)))
    assert mu.shape == (3, 3) and (up >= mu).all() and (up <= o.cap).all()


def test_output_tokens_derived_from_cost() -> None:
    c = cat(m("a", inp=10, out=20, per_request=0.001, prompt_overhead_tokens=0))
    texts = ["one two three", "four five six seven eight"]
    pt = count_tokens(texts)
    comp_true = np.array([5.0, 9.0])
    cost = (pt * 10e-6 + comp_true * 20e-6 + 0.001)[:, None]
    lab = _outcomes(2, ("a",), None, cost=cost, texts=texts)
    ct, ptl, src = observed_completion_tokens(lab, c)
    assert src == ["derived from cost"] and np.allclose(ct[:, 0], comp_true) and np.allclose(ptl[:, 0], pt)


def test_length_regression_recovers_slope() -> None:
    c = cat(m("a", max_output_tokens=4000))
    rng = np.random.default_rng(0)
    x = rng.uniform(10, 1000, 200)
    y = 20 + 0.5 * x + rng.normal(0, 3, 200)
    o = fit_output_tokens(c, y[:, None], x[:, None], regression=True)
    assert o.slope[0] == pytest.approx(0.5, abs=0.02) and o.intercept[0] == pytest.approx(20, abs=3)
    mu, up, _ = o.predict(np.array([[100.0], [800.0]]))
    assert mu[1, 0] > mu[0, 0] + 300 and (up > mu).all()


def test_cost_matrix_and_infeasible_pairs() -> None:
    c = cat(m("cheap", inp=1, out=2, context=64, max_output_tokens=16, prompt_overhead_tokens=0),
            m("big", inp=10, out=30, per_request=0.01, max_output_tokens=16, prompt_overhead_tokens=0))
    texts = ["short prompt", "word " * 100]
    o = fit_output_tokens(c, np.array([[4.0, 8.0], [6.0, 12.0], [8.0, 10.0]]), quantile=0.95)
    cm = estimate_costs(texts, c, o, query_ids=["q1", "q2"])
    pt = count_tokens(texts)
    assert cm.mean[0, 0] == pytest.approx(pt[0] * 1e-6 + 6 * 2e-6)
    assert cm.mean[0, 1] == pytest.approx(pt[0] * 10e-6 + 10 * 30e-6 + 0.01)
    assert (cm.upper[np.isfinite(cm.upper)] >= cm.mean[np.isfinite(cm.mean)]).all()
    assert math.isinf(cm.mean[1, 0]) and math.isinf(cm.upper[1, 0]) and cm.feasible[1, 1]
    assert cm.infeasible_counts() == {"cheap": 1}
    row = cm.infeasible()[0]
    assert row["id"] == "q2" and row["model"] == "cheap" and row["context"] == 64 and row["prompt_tokens"] > 48
    assert cm.no_feasible_model().size == 0
    assert cm.var[0, 0] == pytest.approx(np.var([4.0, 6.0, 8.0], ddof=1) * 2e-6 ** 2)


def test_totals_add_systematic_tokenizer_error() -> None:
    c = cat(m("exact", inp=10, out=10, tokenizer="cl100k_base", prompt_overhead_tokens=0),
            m("approx", inp=10, out=10, prompt_overhead_tokens=0))  # unknown id: approximate, margin 0.25
    o = fit_output_tokens(c, np.array([[2.0, 2.0], [4.0, 4.0]]))
    texts = ["alpha beta gamma delta"] * 3
    cm = estimate_costs(texts, c, o)
    pc = cm.prompt_tokens[0, 0] * 10e-6
    assert cm.upper[0, 1] == pytest.approx(pc * 1.25 + o.upper[1] * 10e-6)
    exact, approx = cm.total(np.zeros(3, dtype=int)), cm.total(np.ones(3, dtype=int))
    assert exact["sd_tokenizer"] == 0 and exact["mean"] == pytest.approx(approx["mean"])
    assert approx["sd_tokenizer"] == pytest.approx(3 * pc * 0.125)  # fully correlated: sds add up
    assert approx["sd"] ** 2 == pytest.approx(approx["sd_output_length"] ** 2 + approx["sd_tokenizer"] ** 2)
    sub = cm.subset(np.array([0, 2]))
    assert sub.n == 2 and sub.total(np.ones(2, dtype=int))["sd_tokenizer"] == pytest.approx(2 * pc * 0.125)


@settings(max_examples=60, deadline=None)
@given(inp=st.floats(0, 100), out=st.floats(0, 100), req=st.floats(0, 0.1),
       pt=st.integers(0, 10_000), ct=st.integers(0, 512), max_out=st.integers(1, 512))
def test_reservation_bounds_every_possible_call(inp: float, out: float, req: float, pt: int, ct: int,
                                                max_out: int) -> None:
    spec = ModelSpec(name="x", input_per_million=inp, output_per_million=out, per_request=req,
                     tokenizer="cl100k_base", max_output_tokens=max_out)
    ct = min(ct, max_out)  # the server caps the completion at max_tokens
    assert spec.call_cost(pt, ct) <= spec.reservation(pt) * (1 + 1e-12)
