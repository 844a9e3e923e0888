"""The label advisor: its count meets the margin it promises, by the bound's own formula and
in simulation; the default sample size follows it with its floor and cap."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from optllm.cli import app
from optllm.errors import OptLLMError
from optllm.evaluate.uncertainty import clopper_pearson, effective_trials
from optllm.planning.advisor import (MAX_SHARE, MIN_LABELS, advise, default_sample_size, half_width,
                                     labels_for_margin)


@pytest.mark.parametrize("n_total,p,conf,margin", [(100_000, 0.5, 0.9, 0.05), (5_000, 0.8, 0.95, 0.03),
                                                   (2_000, 0.95, 0.8, 0.02)])
def test_count_is_the_smallest_meeting_the_margin(n_total: int, p: float, conf: float, margin: float) -> None:
    n = labels_for_margin(margin, n_total, p, conf)
    assert n is not None
    assert half_width(n, n_total, p, conf) <= margin < half_width(n - 1, n_total, p, conf)


def test_width_shrinks_until_half_then_grows() -> None:
    w = half_width(np.array([10, 100, 500, 1000, 1500, 1990]), 2000)
    assert (np.diff(w[:4]) < 0).all() and w[5] > w[3]
    assert labels_for_margin(0.05, 300) is None  # 300 prompts cannot give ±0.05 at 90%


def test_the_margin_holds_in_simulation() -> None:
    """Label n of N (finite population, accuracy p): the realised accuracy of the N − n other
    prompts is at least the labelled bound with probability ≥ C, and the bound sits within
    the margin of the estimate on average."""
    rng = np.random.default_rng(0)
    N, p, conf, margin = 4_000, 0.7, 0.9, 0.05
    n = labels_for_margin(margin, N, p, conf)
    correct = int(p * N)
    k = rng.hypergeometric(correct, N - correct, n, size=4000)  # right answers among the labelled
    est = k / n
    lower = clopper_pearson(est, effective_trials(n, N - n), conf, -1.0)
    realised = (correct - k) / (N - n)
    assert np.mean(realised >= lower) >= conf - 0.02
    assert np.mean(est - lower) <= margin + 0.005


def test_default_size_floor_and_cap() -> None:
    assert default_sample_size(300)[0] == int(MAX_SHARE * 300)  # never 6 labels for 300 prompts
    assert default_sample_size(20)[0] == 10 and default_sample_size(200)[0] == 100  # half of a small batch
    assert default_sample_size(100_000, margin=0.5)[0] == MIN_LABELS  # the floor
    size, adv = default_sample_size(100_000)
    assert size == adv.needed == labels_for_margin(0.05, 100_000) and MIN_LABELS <= size < 1000
    with pytest.raises(OptLLMError, match="--margin"):
        advise(100, margin=0)


def test_advice_per_model_with_labels() -> None:
    adv = advise(10_000, have=60, accuracies={"a": 0.5, "b": 0.97})
    assert adv.per_model["b"] < adv.per_model["a"] == adv.needed and not adv.enough
    assert "add" in adv.message and adv.width["a"] > adv.width["b"]


def test_cli_sample_uses_and_reports_the_advice(tmp_path: Path) -> None:
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"id": i, "prompt": f"q {i}"}) + "\n" for i in range(3000)))
    r = CliRunner().invoke(app, ["sample", str(p), "--out", str(tmp_path / "s.jsonl"), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["sampled"] == info["label_advice"]["needed"] == labels_for_margin(0.05, 3000)
    r = CliRunner().invoke(app, ["sample", str(p), "--size", "6", "--out", str(tmp_path / "s.jsonl")])
    assert r.exit_code == 0 and "warning" in r.output and "±0.05" in r.output


def test_confidence_levels_are_printed_without_rounding_onto_100() -> None:
    from optllm.selection.goal import percent

    assert [percent(x) for x in (0.9, 0.95, 0.975, 0.996, 1 - 0.1 * 30 / 1890)] == [
        "90%", "95%", "97.5%", "99.6%", "99.8%"]
    assert percent(0.99999) != "100%" and percent(0.99996) != "100.0%"
