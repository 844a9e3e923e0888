"""`optllm label`: scorers, and labelling against a fake OpenAI-compatible server whose models
answer a known question set correctly with set probabilities (127.0.0.1 only)."""
from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_openai import FakeOpenAI  # noqa: E402

from optllm.cli import app  # noqa: E402
from optllm.cost import parse_catalogue  # noqa: E402
from optllm.data import load_long  # noqa: E402
from optllm.dispatch.ledger import ResumeState, ledger_path  # noqa: E402
from optllm.errors import OptLLMError  # noqa: E402
from optllm.labelling import label, parse_scorer  # noqa: E402
from optllm.labelling.scorers import choice_letter, judge_prompt, judge_verdict, numbers_in  # noqa: E402

FAST = {"backoff_base": 0.005, "backoff_cap": 0.05}
# the fake world: model -> probability of a correct answer (easy questions: +0.15)
P_CORRECT = {"small": 0.35, "mid": 0.6, "large": 0.9}


@pytest.fixture(autouse=True)
def _local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("FAKE_KEY", "sk-test-123")


def _u(*parts: str) -> float:
    h = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def question(i: int) -> tuple[str, str]:
    easy = i % 2 == 0
    a, b = 3 + i, 7 + 2 * i
    return (f"Q{i} ({'easy' if easy else 'hard'}): what is {a} + {b}? Reply with the number.", str(a + b))


def truth(model: str, prompt: str) -> bool:
    """Whether `model` answers `prompt` correctly in the fake world (deterministic)."""
    p = P_CORRECT[model] + (0.15 if "(easy)" in prompt else -0.15)
    return _u(model, prompt) < p


def responder(model: str, prompt: str) -> str:
    if prompt.startswith("You are grading"):  # the judge: it reads the ANSWER and the REFERENCE
        ans = prompt.split("ANSWER:\n")[-1].strip()
        ref = prompt.split("REFERENCE:\n")[1].split("\n")[0].strip()
        return "CORRECT" if numbers_in(ans)[-1:] == numbers_in(ref)[:1] else "INCORRECT"
    a, b = re.search(r"what is (\d+) \+ (\d+)", prompt).groups()
    right = int(a) + int(b)
    if _u("unparsable", model, prompt) < 0.03:
        return "I am not sure."
    return f"The answer is {right if truth(model, prompt) else right + 1}."


def catalogue(base_url: str) -> object:
    models = [
        {"name": "small", "input_per_million": 0.1, "output_per_million": 0.2},
        {"name": "mid", "input_per_million": 1, "output_per_million": 2},
        {"name": "large", "input_per_million": 10, "output_per_million": 30},
    ]
    return parse_catalogue({"defaults": {"base_url": base_url, "api_key_env": "FAKE_KEY", "max_output_tokens": 20,
                                         "tokenizer": "cl100k_base", "timeout_s": 5},
                            "models": models}, "test-models.yaml")


def write_catalogue(path: Path, base_url: str) -> Path:
    path.write_text(
        "defaults:\n"
        f"  base_url: {base_url}\n  api_key_env: FAKE_KEY\n  max_output_tokens: 20\n  tokenizer: cl100k_base\n"
        "  timeout_s: 5\n"
        "models:\n"
        "  - {name: small, input_per_million: 0.1, output_per_million: 0.2}\n"
        "  - {name: mid, input_per_million: 1, output_per_million: 2}\n"
        "  - {name: large, input_per_million: 10, output_per_million: 30}\n", encoding="utf-8")
    return path


def write_questions(path: Path, n: int) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            q, a = question(i)
            fh.write(json.dumps({"id": f"q{i}", "prompt": q, "reference": a}) + "\n")
    return path


# ---------------------------------------------------------------------- scorers
@pytest.mark.parametrize("spec,answer,ref,want", [
    ("exact", " Paris ", "Paris", 1.0), ("exact", "paris", "Paris", 0.0),
    ("normalised", "The Paris!", "paris", 1.0), ("normalised", "Lyon", "Paris", 0.0),
    ("number", "so it is 1,234.5 in total", "1234.5", 1.0), ("number", "12 then 13", "12", 0.0),
    ("number", "no digits", "4", None), ("number:0.01", "3.141", "3.14", 1.0),
    ("number", "from 10-20 it is 20", "20", 1.0), ("number", "x = \u22125", "-5", 1.0),
    ("number", "so 3 + 4 = 7 #### 7", "Natalia sold 48 + 24 = 72 clips. #### 72", 0.0),
    ("contains", "I know nothing", "no", 0.0),
    ("choice", "Answer: (C)", "C", 1.0), ("choice", "B. because", "C", 0.0), ("choice", "none of these", "C", None),
    ("regex:answer is (\\w+)", "I think the answer is Blue.", "blue", 1.0), ("regex:answer is (\\w+)", "blue", "blue", None),
    ("contains", "It is the city of Paris, France", "Paris", 1.0), ("contains", "Lyon", "Paris", 0.0),
])
def test_scorers(spec: str, answer: str, ref: str, want: float | None) -> None:
    assert parse_scorer(spec)(answer, ref) == want


def test_scorer_errors_are_one_line() -> None:
    for bad, says in (("fuzzy", "unknown scorer"), ("number:abc", "tolerance"), ("regex:(", "not a regular"),
                      ("python:nomodule_xyz:f", "cannot import"), ("python:json:nofn", "no function"),
                      ("judge:", "name the judge")):
        with pytest.raises(OptLLMError, match=says) as e:
            parse_scorer(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(OptLLMError, match="no single number"):
        parse_scorer("number")("5", "five")


def test_python_scorer_and_its_checked_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_scorers.py").write_text(
        "def grade(answer, reference, *, query_id, prompt):\n"
        "    return None if not answer else answer.strip().upper() == reference.upper()\n"
        "def bad(answer, reference, *, query_id, prompt):\n    return 0.5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    s = parse_scorer("python:my_scorers:grade")
    assert s("yes ", "YES") == 1.0 and s("", "YES") is None
    with pytest.raises(OptLLMError, match="must be 0 or 1"):
        parse_scorer("python:my_scorers:bad")("a", "b")


def test_choice_and_judge_parsing() -> None:
    assert choice_letter("The answer is (D)") == "D" and choice_letter("the answer is a bit long") is None
    assert choice_letter("Option A is wrong; the answer is B") == "B" and choice_letter("**C**") == "C"
    assert judge_verdict("INCORRECT.") == 0.0 and judge_verdict("correct") == 1.0 and judge_verdict("maybe") is None
    assert judge_verdict("Not correct.") == 0.0 and judge_verdict("correct? No: INCORRECT") == 0.0
    p = judge_prompt("What is 2+2?", "4", "4")
    assert "REFERENCE:\n4" in p and "ANSWER:\n4" in p
    assert "REFERENCE" not in judge_prompt("q", "a", None)


# ---------------------------------------------------------------------- labelling
def test_label_accuracies_match_the_world_and_spend_stays_under_cap(tmp_path: Path) -> None:
    n = 240
    qs = [question(i) for i in range(n)]
    ids, prompts = [f"q{i}" for i in range(n)], [q for q, _ in qs]
    refs = dict(zip(ids, [a for _, a in qs]))
    out = tmp_path / "labels.csv"
    with FakeOpenAI(responder=responder, completion_tokens=8) as srv:
        cat = catalogue(srv.base_url)
        rep = label(ids, prompts, refs, cat, parse_scorer("number"), out, concurrency=8, **FAST)
        assert rep.missing == 0 and rep.labelled == n * 3
        assert sum(srv.served.values()) == n * 3  # one call per pair
        # resume: nothing is sent again
        rep2 = label(ids, prompts, refs, cat, parse_scorer("number"), out, concurrency=8, **FAST)
        assert sum(srv.requests.values()) == n * 3 and rep2.labelled == n * 3
    df = pd.read_csv(out)
    assert list(df.columns)[:4] == ["query_id", "model", "correct", "cost"]
    for m, p in P_CORRECT.items():
        sub = df[df.model == m]
        expect = np.mean([truth(m, t) and _u("unparsable", m, t) >= 0.03 for t in prompts])
        assert sub.correct.mean() == pytest.approx(expect, abs=1e-12)  # scored exactly as the world says
        assert abs(sub.correct.mean() - p * 0.97) < 4 * np.sqrt(p * (1 - p) / n)  # within sampling error
        assert rep.unparsed[m] == int((~sub.parsed).sum()) > 0
    assert (df.cost > 0).all() and df.prompt_tokens.notna().all()
    labelled = load_long(out, require_cost=False)  # the file plan reads
    assert labelled.n == n and set(labelled.models) == set(P_CORRECT)
    # a hard cap: spend never exceeds it, and missing pairs are reported
    cap_out = tmp_path / "capped.csv"
    with FakeOpenAI(responder=responder, completion_tokens=8) as srv:
        cat = catalogue(srv.base_url)
        cap = 0.6 * float(df.cost.sum())
        rep3 = label(ids, prompts, refs, cat, parse_scorer("number"), cap_out, max_spend=cap, concurrency=4, **FAST)
    assert rep3.spent_total <= cap + 1e-12 and rep3.missing > 0 and rep3.stopped
    assert len(pd.read_csv(cap_out)) == rep3.labelled < n * 3


def test_label_only_the_pairs_asked_and_resume_across_pair_sets(tmp_path: Path) -> None:
    """`pairs=`: only those (prompt, model) pairs are sent and written; a later call with more
    pairs sends only the new ones; a pair naming a model not labelled is a one-line error."""
    n = 20
    qs = [question(i) for i in range(n)]
    ids, prompts = [f"q{i}" for i in range(n)], [q for q, _ in qs]
    refs = dict(zip(ids, [a for _, a in qs]))
    out = tmp_path / "labels.csv"
    first = [(q, "small") for q in ids] + [("q3", "large"), ("q7", "mid")]
    with FakeOpenAI(responder=responder, completion_tokens=8) as srv:
        cat = catalogue(srv.base_url)
        rep = label(ids, prompts, refs, cat, parse_scorer("number"), out, pairs=first, **FAST)
        assert rep.pairs == rep.labelled == len(first) and sum(srv.served.values()) == len(first)
        df = pd.read_csv(out)
        assert set(zip(df.query_id, df.model)) == set(first)
        more = first + [("q3", "mid"), ("q9", "large")]
        rep = label(ids, prompts, refs, cat, parse_scorer("number"), out, pairs=more, **FAST)
        assert sum(srv.requests.values()) == len(more)  # the first pairs came from the journal
        assert set(zip(pd.read_csv(out).query_id, pd.read_csv(out).model)) == set(more)
        with pytest.raises(OptLLMError, match="not among the models"):
            label(ids, prompts, refs, cat, parse_scorer("number"), out, models=["small"], pairs=[("q1", "mid")])


def test_judge_scores_and_both_phases_share_the_cap(tmp_path: Path) -> None:
    n = 40
    qs = [question(i) for i in range(n)]
    ids, prompts = [f"q{i}" for i in range(n)], [q for q, _ in qs]
    refs = dict(zip(ids, [a for _, a in qs]))
    with FakeOpenAI(responder=responder, completion_tokens=8) as srv:
        cat = catalogue(srv.base_url)
        rep = label(ids, prompts, refs, cat, parse_scorer("judge:mid"), tmp_path / "j.csv", concurrency=8, **FAST)
        by_number = label(ids, prompts, refs, cat, parse_scorer("number"), tmp_path / "n.csv", concurrency=8,
                          work=tmp_path / "other", **FAST)
        assert srv.by_model["mid"] == 2 * n + 3 * n  # answers twice (two work folders) + one verdict per pair
        cap = 1.1 * float(pd.read_csv(tmp_path / "n.csv").cost.sum())  # the answers fit; not all the verdicts
        capped = label(ids, prompts, refs, cat, parse_scorer("judge:large"), tmp_path / "c.csv", max_spend=cap,
                       concurrency=8, **FAST)
        assert capped.spent_total <= cap + 1e-12 and capped.stopped and 0 < capped.labelled < 3 * n
        assert capped.missing == 3 * n - capped.labelled
    j, num = pd.read_csv(tmp_path / "j.csv"), pd.read_csv(tmp_path / "n.csv")
    assert (j.correct.to_numpy() == num.correct.to_numpy()).all()  # this judge agrees with the number scorer
    assert rep.judge_cost > 0 and (j.judge_cost > 0).all() and by_number.judge_cost == 0
    assert (tmp_path / "j.csv.calls" / "judge-rubric.txt").read_text().startswith("You are grading")
    work = tmp_path / "j.csv.calls"
    spent = sum(ResumeState.read(work / f, ledger_path(work / f)).spent for f in ("answers.jsonl", "judge.jsonl"))
    assert rep.spent_total == pytest.approx(spent)


def test_label_bad_input_fails_before_any_call(tmp_path: Path) -> None:
    with FakeOpenAI(responder=responder) as srv:
        cat = catalogue(srv.base_url)
        for kw, says in ((dict(scorer=parse_scorer("judge:gpt-9")), "not in the catalogue"),
                         (dict(scorer=parse_scorer("number"), references={"q0": "three"}), "no single number"),
                         (dict(scorer=parse_scorer("number"), ids=["q\t0"], references={"q\t0": "3"}), "tab"),
                         (dict(scorer=parse_scorer("number"), references=None), "reference"),
                         (dict(scorer=parse_scorer("number"), out=tmp_path / "x.txt"), ".csv or .parquet")):
            args = dict(ids=["q0"], prompts=["what is 1 + 2?"], references={"q0": "3"}, catalogue=cat,
                        out=tmp_path / "l.csv")
            args.update(kw)
            with pytest.raises(OptLLMError, match=says):
                label(**args)
        assert sum(srv.requests.values()) == 0


def test_cli_sample_label_plan_dispatch_end_to_end(tmp_path: Path) -> None:
    """A new user's path: prompts with references -> sample -> label -> plan -> dispatch."""
    runner = CliRunner()
    n = 400
    prompts = write_questions(tmp_path / "prompts.jsonl", n)
    with FakeOpenAI(responder=responder, completion_tokens=8) as srv:
        cat = write_catalogue(tmp_path / "models.yaml", srv.base_url)
        r = runner.invoke(app, ["sample", str(prompts), "--size", "25%", "--out", str(tmp_path / "s.jsonl")])
        assert r.exit_code == 0, r.output
        first = json.loads((tmp_path / "s.jsonl").read_text().splitlines()[0])
        assert set(first) == {"id", "prompt", "reference"}  # the reference travels with the sample
        r = runner.invoke(app, ["label", str(tmp_path / "s.jsonl"), "--models", str(cat), "--scorer", "number",
                                "--out", str(tmp_path / "labels.csv"), "--max-spend", "1", "--json"])
        assert r.exit_code == 0, r.output
        rep = json.loads(r.stdout)
        assert rep["labelled"] == 300 and rep["spent_total"] <= 1
        assert "sk-test-123" not in r.output
        r = runner.invoke(app, ["plan", str(prompts), "--models", str(cat), "--labels", str(tmp_path / "labels.csv"),
                                "--out", str(tmp_path / "plan"), "--json"])
        assert r.exit_code == 0, r.output
        plan = pd.read_csv(tmp_path / "plan" / "plan.csv")
        assert len(plan) == n - 100
        # more labels later: a second sample beside the first, only its prompts are sent
        sent = sum(srv.requests.values())
        r = runner.invoke(app, ["sample", str(prompts), "--size", "10", "--exclude", str(tmp_path / "labels.csv"),
                                "--out", str(tmp_path / "more.jsonl")])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["label", str(tmp_path / "s.jsonl"), str(tmp_path / "more.jsonl"), "--models", str(cat),
                                "--scorer", "number", "--out", str(tmp_path / "labels2.csv"), "--work",
                                str(tmp_path / "labels.csv.calls"), "--json"])
        assert r.exit_code == 0, r.output
        assert sum(srv.requests.values()) - sent == 30 and json.loads(r.stdout)["labelled"] == 330
        r = runner.invoke(app, ["dispatch", str(tmp_path / "plan"), "--models", str(cat), "--out",
                                str(tmp_path / "answers.jsonl"), "--max-spend", "1", "--json", "--no-progress"])
        assert r.exit_code == 0, r.output
    got = [json.loads(x) for x in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(got) == n - 100
    text = {json.loads(x)["id"]: json.loads(x) for x in prompts.read_text().splitlines()}
    score = parse_scorer("number")
    realised = np.mean([score(a["answer"], text[a["id"]]["reference"]) or 0.0 for a in got])
    cheapest = np.mean([truth("small", text[a["id"]]["prompt"]) for a in got])
    assert realised > cheapest  # the knee plan buys accuracy over the cheapest model


def test_cli_label_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "q0", "prompt": "what is 1 + 2?"}) + "\n")
    cat = write_catalogue(tmp_path / "models.yaml", "http://127.0.0.1:9/v1")
    for args, says in ((["--scorer", "number"], "no 'reference' column"),
                       (["--scorer", "bogus"], "unknown scorer"),
                       (["--scorer", "number", "--rubric", str(prompts)], "--rubric is for")):
        r = runner.invoke(app, ["label", str(prompts), "--models", str(cat), "--out", str(tmp_path / "l.csv"), *args])
        assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output, r.output


def _label_budget_args(tmp_path: Path, srv: FakeOpenAI, prompts: Path, labels: Path, *extra: str
                       ) -> tuple[Path, list[str]]:
    """The catalogue of the fake server and a `plan --label-budget` command line on it."""
    cat = write_catalogue(tmp_path / "models.yaml", srv.base_url)
    return cat, ["plan", str(prompts), "--models", str(cat), "--labels", str(labels), "--label-budget", "0.05",
                 "--scorer", "number", "--target-accuracy", "0.7", *extra, "--out", str(tmp_path / "plan"), "--json"]


def test_cli_plan_labels_until_certified(tmp_path: Path) -> None:
    """`plan --label-budget`: rounds of real labelling against the fake endpoint, within the
    labelling budget, resumable, then a plan whose target is certified or an honest exit 1."""
    runner = CliRunner()
    n = 600
    prompts, labels = write_questions(tmp_path / "prompts.jsonl", n), tmp_path / "labels.csv"
    with FakeOpenAI(responder=responder, completion_tokens=8) as srv:
        cat, args = _label_budget_args(tmp_path, srv, prompts, labels)
        r = runner.invoke(app, args)
        assert r.exit_code in (0, 1), r.output
        s = json.loads(r.stdout)
        lab = s["labelling"]
        assert lab["labels"]["spent_total"] <= 0.05 + 1e-12
        sizes = [rd["n_labelled"] for rd in lab["rounds"]]
        assert sizes == sorted(sizes) and sizes[0] == 30
        assert s["n_labelled"] == sizes[-1] and s["n_to_plan"] == n - sizes[-1]
        if r.exit_code == 0:
            assert s["selection"]["chosen"]["lower"] >= 0.7 and (tmp_path / "plan" / "plan.csv").exists()
        sent = sum(srv.requests.values())
        assert sent == sum(srv.served.values())  # nothing sent twice
        r2 = runner.invoke(app, args)  # resumes: the same rounds, no new call for labels already bought
        assert r2.exit_code == r.exit_code
        assert sum(srv.requests.values()) == sent
        assert json.loads(r2.stdout)["labelling"]["rounds"] == lab["rounds"]  # each round's own cost, as before
    r = runner.invoke(app, ["plan", str(prompts), "--models", str(cat), "--labels", str(tmp_path / "x.csv"),
                            "--label-budget", "1", "--scorer", "number", "--budget", "1", "--out", str(tmp_path / "p2")])
    assert r.exit_code == 2 and "--target-accuracy" in r.output


def test_an_edited_prompt_is_asked_again_and_text_ids_survive(tmp_path: Path) -> None:
    ids = ["007", "7", "q2"]
    prompts = [question(i)[0] for i in range(3)]
    refs = {q: question(i)[1] for i, q in enumerate(ids)}
    out = tmp_path / "labels.csv"
    with FakeOpenAI(responder=responder) as srv:
        cat = catalogue(srv.base_url)
        label(ids, prompts, refs, cat, parse_scorer("number"), out, **FAST)
        assert sum(srv.requests.values()) == 9
        edited = prompts[:2] + [prompts[2].replace("Reply", "Answer")]
        label(ids, edited, refs, cat, parse_scorer("number"), out, **FAST)
        assert sum(srv.requests.values()) == 12  # only the edited prompt, once per model
    labelled = load_long(out, require_cost=False)
    assert sorted(map(str, labelled.query_ids)) == ["007", "7", "q2"]


def test_cli_plan_labels_until_certified_on_a_holdout(tmp_path: Path) -> None:
    """`plan --label-budget --certify holdout`: training prompts get every model, holdout
    prompts only the pairs the tested plans route to; within the budget, nothing sent twice,
    resumable, and a certified plan's bound meets the target."""
    runner = CliRunner()
    n = 600
    prompts, labels = write_questions(tmp_path / "prompts.jsonl", n), tmp_path / "labels.csv"
    with FakeOpenAI(responder=responder, completion_tokens=8) as srv:
        cat, args = _label_budget_args(tmp_path, srv, prompts, labels, "--certify", "holdout", "--holdout", "0.6")
        r = runner.invoke(app, args)
        assert r.exit_code in (0, 1), r.output
        s = json.loads(r.stdout)
        assert s["labelling"]["labels"]["spent_total"] <= 0.05 + 1e-12
        sizes = [rd["n_labelled"] for rd in s["labelling"]["rounds"]]
        assert s["n_holdout"] > 0 and s["n_labelled"] == s["n_train"] + s["n_validation"] + s["n_holdout"]
        assert s["n_labelled"] == sizes[-1] and s["n_to_plan"] == n - sizes[-1]
        df = pd.read_csv(labels, dtype={"query_id": str})
        assert (df.groupby("query_id")["model"].nunique() < 3).any()  # holdout prompts lack some models
        # every model on each training prompt; the rest of the file is the holdout's pairs, fewer than all
        assert s["holdout_pairs_labelled"] == len(df) - 3 * (s["n_train"] + s["n_validation"])
        assert 0 < s["holdout_pairs_labelled"] < 3 * s["n_holdout"]
        if r.exit_code == 0:
            assert s["selection"]["chosen"]["lower"] >= 0.7 and (tmp_path / "plan" / "plan.csv").exists()
        sent = sum(srv.requests.values())
        assert sent == sum(srv.served.values()) == len(df)  # nothing sent twice; every call is a label
        assert s["labelling"]["certify"] == "holdout" and s["labelling"]["holdout"] == 0.6
        r2 = runner.invoke(app, args)
        assert r2.exit_code == r.exit_code and sum(srv.requests.values()) == sent
        # the resumed rounds report (and decide on) what each round's labels cost, as the first run did
        assert json.loads(r2.stdout)["labelling"]["rounds"] == s["labelling"]["rounds"]
    r = runner.invoke(app, ["plan", str(prompts), "--models", str(cat), "--labels", str(tmp_path / "y.csv"),
                            "--certify", "holdout", "--target-accuracy", "0.7", "--out", str(tmp_path / "p3")])
    assert r.exit_code == 2 and "--label-budget" in r.output
    r = runner.invoke(app, ["plan", str(prompts), "--models", str(cat), "--labels", str(tmp_path / "y.csv"),
                            "--label-budget", "1", "--certify", "bootstrap", "--target-accuracy", "0.7",
                            "--out", str(tmp_path / "p3")])
    assert r.exit_code == 2 and "--certify" in r.output
    r = runner.invoke(app, ["plan", str(prompts), "--models", str(cat), "--labels", str(tmp_path / "y.csv"),
                            "--label-budget", "1", "--holdout", "0.3", "--target-accuracy", "0.7",
                            "--out", str(tmp_path / "p3")])
    assert r.exit_code == 2 and "--certify holdout" in r.output
