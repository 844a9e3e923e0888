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
