"""Bad options and inputs of issue 16 through the CLI: exit code 2 and one line on stderr
that names the option or file, never a traceback; what used to be accepted silently is refused."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from optllm.cli import app
from optllm.data import load

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "models.yaml"

# the least each command needs (the paths need not exist: options are checked before any file is read)
SEED_COMMANDS = {
    "run": ["synthetic:300x3"],
    "sample": ["prompts.jsonl", "--out", "s.jsonl"],
    "plan": ["prompts.jsonl", "--models", str(EXAMPLE), "--labels", "labels.csv", "--budget", "1", "--out", "p"],
    "dispatch": ["p", "--models", str(EXAMPLE), "--out", "answers.jsonl"],
    "bench": ["synthetic:200x3", "--methods", "zero"],
    "predict-eval": ["synthetic:300x3"],
    "compare-optimizers": ["synthetic:60x3"],
    "coverage": ["synthetic:200x3"],
    "label-budget": ["synthetic:200x3"],
    "bench-speed": [],
    "serve": ["--models", str(EXAMPLE), "--from", "p", "--budget-per-1k", "1"],
}


def one_line_error(r, says: str) -> None:
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit), r.exception
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr


def _commands_with_seed() -> list[str]:
    out = []
    for cmd in app.registered_commands:
        fn = getattr(cmd.callback, "__wrapped__", cmd.callback)
        if "seed" in inspect.signature(fn).parameters:
            out.append(cmd.name or fn.__name__.replace("_", "-"))
    return out


def test_every_seed_option_is_listed() -> None:
    assert set(_commands_with_seed()) == set(SEED_COMMANDS)


@pytest.mark.parametrize("command", sorted(SEED_COMMANDS))
def test_negative_seed_is_one_line(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, [command, *SEED_COMMANDS[command], "--seed", "-1"])
    one_line_error(r, "--seed must be a non-negative integer, got -1")


@pytest.mark.parametrize("command", [["run", "synthetic:300x3"], ["bench", "synthetic:300x3", "--methods", "zero"],
                                     ["predict-eval", "synthetic:300x3", "--predictors", "base"]])
def test_train_frac_zero_is_refused_not_raised_to_two(command: list[str]) -> None:
    r = runner.invoke(app, [*command, "--train-frac", "0"])
    one_line_error(r, "--train-frac 0.0 leaves no labelled training queries")


def test_split_counts() -> None:
    from optllm.data import split
    from optllm.errors import OptLLMError

    assert split(500, 0.001, 0.01).train.size == 2  # a fraction too small for this data is raised to 2
    assert split(500, 5, 0.01).train.size == 5
    for bad, says in ((0, "leaves no labelled training queries"), (0.0, "leaves no labelled"),
                      (1, "at least 2 labelled training queries"), (-0.5, "--train-frac must be a non-negative")):
        with pytest.raises(OptLLMError, match=says):
            split(500, bad, 0.01)


def _one_model_file(tmp_path: Path) -> Path:
    d = load("synthetic:200x3").select_models([0])
    p = tmp_path / "one.csv"
    pd.DataFrame({"query_id": d.query_ids, "model": d.models[0], "correct": d.correct[:, 0],
                  "cost": d.cost[:, 0]}).to_csv(p, index=False)
    return p


@pytest.mark.parametrize("command", [["run"], ["bench", "--reps", "1", "--methods", "zero"]])
def test_one_model_is_a_clear_error_not_sklearn_warnings(command: list[str], tmp_path: Path) -> None:
    r = runner.invoke(app, [command[0], str(_one_model_file(tmp_path)), *command[1:]])
    one_line_error(r, "one.csv: one model only ('model_00'): there is nothing to route")
    assert "Warning" not in r.output


def test_plan_with_labels_of_one_model(tmp_path: Path) -> None:
    prompts, labels = tmp_path / "prompts.jsonl", tmp_path / "labels.csv"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n" for i in range(20)))
    labels.write_text("query_id,model,correct\n" + "".join(f"q{i},gpt-4,{i % 2}\n" for i in range(6)))
    r = runner.invoke(app, ["plan", str(prompts), "--models", str(EXAMPLE), "--labels", str(labels), "--budget", "1",
                            "--out", str(tmp_path / "p")])
    one_line_error(r, "one model only ('gpt-4'): there is nothing to route")


def test_describe_still_works_on_one_model(tmp_path: Path) -> None:
    r = runner.invoke(app, ["describe", str(_one_model_file(tmp_path)), "--json"])
    assert r.exit_code == 0, r.output


def test_labels_must_be_0_or_1_for_plan(tmp_path: Path) -> None:
    prompts, labels = tmp_path / "prompts.jsonl", tmp_path / "labels.csv"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n" for i in range(20)))
    rows = [f"q{i},{m},{(i + k) % 2}\n" for i in range(8) for k, m in enumerate(("gpt-4", "gpt-3.5-turbo"))]
    rows[3] = "q1,gpt-3.5-turbo,0.5\n"
    labels.write_text("query_id,model,correct\n" + "".join(rows))
    r = runner.invoke(app, ["plan", str(prompts), "--models", str(EXAMPLE), "--labels", str(labels), "--budget", "1",
                            "--out", str(tmp_path / "p")])
    one_line_error(r, "labels.csv: row 5, column 'correct': 0.5 is not 0 or 1")


def test_graded_scores_stay_allowed_in_outcome_files(tmp_path: Path) -> None:
    p = tmp_path / "graded.csv"
    p.write_text("query_id,model,correct,cost\nq1,a,0.5,0.1\nq1,b,1,0.2\nq2,a,0.25,0.1\nq2,b,0,0.2\n")
    assert load(p).correct[0, 0] == 0.5


@pytest.mark.parametrize("col", ["prompt_tokens", "completion_tokens"])
@pytest.mark.parametrize("value", ["inf", "-inf", "1e999"])
def test_infinite_token_counts_in_labels_are_refused(tmp_path: Path, col: str, value: str) -> None:
    from optllm.data import load_long
    from optllm.errors import OptLLMError

    p = tmp_path / "labels.csv"
    p.write_text(f"query_id,model,correct,{col}\nq1,a,1,10\nq1,b,0,{value}\n")
    with pytest.raises(OptLLMError, match=f"row 3, column '{col}': token count -?inf is not a finite number"):
        load_long(p, require_cost=False)


def test_bench_reports_half_budget_below_the_cheapest_plan_as_unreachable(tmp_path: Path) -> None:
    """Issue 16: where even the cheapest plan costs more than half the best LLM's cost (two models
    of nearly the same price), the half-budget pick is 'not reachable' for that split, not the end."""
    rng = np.random.default_rng(0)
    n = 300
    rows = [{"query_id": f"q{i}", "model": m, "correct": int(rng.random() < acc), "cost": c,
             "prompt": f"question {i} about {rng.integers(20)}"}
            for i in range(n) for m, acc, c in (("a", 0.5, 1.0), ("b", 0.8, 1.2))]
    p = tmp_path / "close.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    r = runner.invoke(app, ["bench", str(p), "--reps", "2", "--methods", "zero,ours", "--train-frac", "0.05",
                            "--val-frac", "0.05", "--json"])
    assert r.exit_code == 0, r.output
    honest = json.loads(r.stdout)["datasets"][str(p)]["honest"]
    half = honest["ours_at_half_best_cost"]
    assert half["reachable"] == 0 and half["of"] == 2 and half["cost"]["defined"] == 0
    assert honest["ours_at_best_cost"]["of"] == 2 and honest["ours_at_best_cost"]["cost"]["defined"] == 2
    table = runner.invoke(app, ["bench", str(p), "--reps", "1", "--methods", "zero,ours", "--train-frac", "0.05",
                                "--val-frac", "0.05"])
    assert table.exit_code == 0 and "0/1 reachable" in table.stdout, table.output


@pytest.mark.parametrize("args, says", [
    (["run", "synthetic:300x3", "--alpha", "nan"], "--alpha must be a finite number, got nan"),
    (["predict-eval", "synthetic:300x3", "--alpha", "inf"], "--alpha must be a finite number, got inf"),
    (["run", "synthetic:300x3", "--folds", "-3"], "--folds must be 0 (no cross-fitting) or at least 2, got -3"),
    (["bench", "synthetic:300x3", "--methods", "zero,ours", "--folds", "-3"], "--folds must be 0"),
    (["coverage", "synthetic:300x3", "--folds", "1"], "--folds must be 0"),
    (["describe", "synthetic:0x3"], "synthetic:0x3: needs at least 2 queries"),
])
def test_bad_numbers_name_their_option(args: list[str], says: str) -> None:
    one_line_error(runner.invoke(app, args), says)


@pytest.mark.parametrize("name", ["synthetic:5x0", "synthetic:-5x3", "synthetic:0x3", "demo:x"])
def test_bad_selectors_from_the_python_api(name: str) -> None:
    from optllm.errors import OptLLMError

    with pytest.raises(OptLLMError) as e:
        load(name)
    assert name in str(e.value) and "\n" not in str(e.value)


def test_a_query_planned_twice_is_refused(tmp_path: Path) -> None:
    from optllm.errors import OptLLMError
    from optllm.planning import read_plan

    (tmp_path / "plan.csv").write_text("id,model,fallbacks\nq0,a,\nq1,a,b\nq0,b,\n")
    (tmp_path / "prompts.jsonl").write_text('{"id": "q0", "prompt": "x"}\n{"id": "q1", "prompt": "y"}\n')
    with pytest.raises(OptLLMError, match=r"plan.csv: row 4: id 'q0' is planned twice"):
        read_plan(tmp_path)
