"""`optllm label`: send every sample prompt to every catalogue model, score the answers, and
write the long-format labels that `optllm plan --labels` reads.

Calls go through the dispatcher (`optllm.dispatch.client`), so labelling has its guarantees:
bounded concurrency, per-model rate limits, retries, a durable journal and resume (a
(query, model) pair with an answer is never sent again), and a hard spend cap. The work folder
(`--work`, by default `LABELS.calls/` beside the labels) holds two answer journals with their
ledgers: `answers.jsonl` (the candidates' answers; one item per query x model x digest of the
prompt, so an edited prompt is asked again, never answered from the journal) and, with a
judge, `judge.jsonl` (its verdicts, keyed by a digest of the judge model and the whole judge
prompt: another rubric or judge asks again) plus `judge-rubric.txt`, the rubric last used.
The labels file holds the pairs of this call only: give every sample file each time.
`--max-spend` caps both together, all runs together: each phase may spend what the cap leaves
after everything the other phase has spent (counted conservatively, as the ledger does).

The labels (written atomically) have one row per answered pair: query_id, model, correct,
cost (from the call's billed usage), prompt_tokens, completion_tokens, judge_cost, parsed
(False when the scorer could not read the answer: scored 0 and counted), prompt, answer,
reference. Pairs without an answer (failed, or not sent under the cap) have no row and are
reported; re-running the command sends only those.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from optllm.cost import Catalogue
from optllm.errors import OptLLMError
from optllm.labelling.scorers import JUDGE_RUBRIC, Scorer, judge_prompt, judge_verdict

SEP = "\t"  # between query id and model in a dispatch item's id
LABEL_COLUMNS = ("query_id", "model", "correct", "cost", "prompt_tokens", "completion_tokens", "judge_cost",
                 "parsed", "prompt", "answer", "reference")


@dataclass
class LabelReport:
    """What a labelling run did, and the state of the labels after it."""

    queries: int
    models: tuple[str, ...]
    pairs: int = 0
    labelled: int = 0
    missing: int = 0  # pairs without an answer (failed or not sent)
    unparsed: dict[str, int] = field(default_factory=dict)  # per model
    accuracy: dict[str, float] = field(default_factory=dict)  # per model, over its labelled queries
    cost: dict[str, float] = field(default_factory=dict)  # billed, per model
    judge_cost: float = 0.0
    judge_unclear: int = 0
    spent_total: float = 0.0  # everything the journals count, both phases, all runs
    max_spend: float | None = None
    stopped: str = ""
    interrupted: str = ""  # the signal that stopped the run, if one did
    failed_examples: dict[str, str] = field(default_factory=dict)
    out: str = ""
    work: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"queries": self.queries, "models": list(self.models), "pairs": self.pairs,
                "labelled": self.labelled, "missing": self.missing, "unparsed": self.unparsed,
                "accuracy": self.accuracy, "cost": self.cost, "judge_cost": self.judge_cost,
                "judge_unclear": self.judge_unclear, "spent_total": self.spent_total,
                "max_spend": self.max_spend, "stopped": self.stopped or None, "interrupted": self.interrupted or None,
                "failed_examples": self.failed_examples, "out": self.out, "work": self.work}


def work_dir_for(out: str | Path) -> Path:
    p = Path(out)
    return p.with_name(p.name + ".calls")


def read_references(path: str | Path, ids: np.ndarray, column: str, source_has: dict[str, str] | None = None
                    ) -> dict[str, str]:
    """Reference answer per query id: from `source_has` (the sample file's own column) or the
    file `path` (columns id/query_id and `column`). Every id must have one."""
    from optllm.planning.prompts import ID_COLUMNS, id_str, read_text_table

    if source_has is not None:
        refs = source_has
        where = f"column {column!r} of the sample"
    else:
        p = Path(path)
        df = read_text_table(p)
        id_col = next((c for c in ("query_id", *ID_COLUMNS) if c in df.columns), None)
        if id_col is None or column not in df.columns:
            raise OptLLMError(f"{p}: references need an 'id' column and a {column!r} column "
                              f"(found {list(map(str, df.columns))[:10]}; --reference-column names it)")
        refs = {id_str(i): ("" if r is None or (isinstance(r, float) and np.isnan(r)) else str(r))
                for i, r in zip(df[id_col], df[column])}
        where = f"{p}"
    missing = [q for q in ids if not str(refs.get(q, "")).strip()]
    if missing:
        raise OptLLMError(f"{where}: no reference answer for {len(missing)} of {len(ids)} queries "
                          f"(first: id {missing[0]!r})")
    return {q: refs[q] for q in ids}


def load_rubric(path: str | Path | None) -> str:
    """The judge's rubric: ours, or the user's file (it must use {prompt} and {answer};
    {reference_block} places the reference when one is given)."""
    if path is None:
        return JUDGE_RUBRIC
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise OptLLMError(f"--rubric {p}: cannot read ({e.strerror})") from None
    for key in ("{prompt}", "{answer}"):
        if key not in text:
            raise OptLLMError(f"--rubric {p}: the rubric must contain {key}")
    try:
        judge_prompt("q", "a", "r", text)
    except (KeyError, IndexError, ValueError) as e:
        raise OptLLMError(f"--rubric {p}: only {{prompt}}, {{answer}} and {{reference_block}} may appear in braces "
                          f"(found {e}); write other braces doubled") from None
    return text


def _spent(answers: Path) -> float:
    from optllm.dispatch.ledger import ResumeState, ledger_path

    return ResumeState.read(answers, ledger_path(answers), repair=False).spent if answers.exists() else 0.0


def _left(max_spend: float | None, other: Path) -> float | None:
    return None if max_spend is None else max(max_spend - _spent(other), 0.0)


def label(ids: Sequence[str], prompts: Sequence[str], references: Mapping[str, str] | None, catalogue: Catalogue,
          scorer: Scorer, out: str | Path, *, models: Sequence[str] | None = None, work: str | Path | None = None,
          max_spend: float | None = None, concurrency: int = 16, rubric: str = JUDGE_RUBRIC,
          environ: Mapping[str, str] | None = None, progress: bool = False, console: Any = None,
          client_factory: Callable[..., Any] | None = None, pairs: Sequence[tuple[str, str]] | None = None,
          **dispatch_kw: Any) -> LabelReport:
    """Label `prompts` with every model of `catalogue` (or `models`): see the module docstring.
    `pairs` (query id, model): label only these pairs of `ids` x `models` instead of all
    (`plan --label-budget --certify holdout` buys a holdout prompt's label only from the
    models its tested plans route it to); the labels file then holds these pairs."""
    from optllm.dispatch.client import Dispatcher, check_ready
    from optllm.planning.items import PlanItem

    ids = [str(i) for i in ids]
    names = tuple(models) if models else catalogue.names
    judge = scorer.judge_model
    if judge is not None and judge not in catalogue:
        raise OptLLMError(f"--scorer {scorer.name}: judge model {judge!r} is not in the catalogue "
                          f"(models: {', '.join(catalogue.names)})")
    if scorer.needs_reference and references is None:
        raise OptLLMError(f"--scorer {scorer.name} compares with a reference answer: give a reference column "
                          "in the sample or --references FILE")
    if max_spend is not None and not (max_spend >= 0 and np.isfinite(max_spend)):
        raise OptLLMError(f"--max-spend must be a non-negative amount in USD, got {max_spend}")
    bad = next((q for q in ids if SEP in q or "\n" in q), None)
    if bad is not None:
        raise OptLLMError(f"query id {bad!r} holds a tab or a newline; labelling needs ids without them")
    if references is not None and scorer.needs_reference:  # a reference the scorer cannot use fails now, not after paying
        for q in ids:
            scorer.reference_value(references[q], q)
    work = Path(work) if work is not None else work_dir_for(out)
    answers_file, judge_file = work / "answers.jsonl", work / "judge.jsonl"
    # the journal key carries a digest of what was sent: a changed prompt (or rubric, judge) is a new call
    wanted = None if pairs is None else {(str(q), str(m)) for q, m in pairs}
    if wanted is not None:
        unknown = next(((q, m) for q, m in sorted(wanted) if m not in names), None)
        if unknown is not None:
            raise OptLLMError(f"pair {unknown}: model {unknown[1]!r} is not among the models labelled "
                              f"({', '.join(names)})")
    grid = [(q, t, m) for q, t in zip(ids, prompts) for m in names if wanted is None or (q, m) in wanted]
    items = [PlanItem(id=_key(q, m, t), prompt=t, model=m) for q, t, m in grid]
    used = list(names) + ([judge] if judge is not None and judge not in names else [])
    cat, keys = check_ready([PlanItem("", "", m) for m in used], catalogue, False, environ)
    _check_writable(out, work)
    rep = LabelReport(queries=len(ids), models=names, pairs=len(items), max_spend=max_spend, out=str(out),
                      work=str(work))
    # labels are worth most as whole rows (every model on the same prompts): keep the sample's order under a cap
    kw = dict(concurrency=concurrency, progress=progress, console=console, client_factory=client_factory,
              cheapest_first=False, **dispatch_kw)
    import asyncio

    first = asyncio.run(Dispatcher(items, cat, answers_file, keys=keys, max_spend=_left(max_spend, judge_file),
                                   **kw).run())
    rep.stopped = first.stopped
    rep.interrupted = first.interrupted
    rep.failed_examples.update(dict(list(first.failed.items())[:5]))
    journal = _answers(answers_file)
    answered = {(q, m): journal[it.id] for it, (q, _, m) in zip(items, grid) if it.id in journal}
    prompt_of = dict(zip(ids, prompts))
    verdicts: dict[tuple[str, str], dict[str, Any]] = {}
    if judge is not None and not rep.interrupted:
        (work / "judge-rubric.txt").write_text(rubric, encoding="utf-8")
        jprompt = {qm: judge_prompt(prompt_of[qm[0]], a["answer"],
                                    None if references is None else references.get(qm[0]), rubric)
                   for qm, a in answered.items()}
        jkey = {qm: _key(qm[0], qm[1], f"{judge}{SEP}{t}") for qm, t in jprompt.items()}
        jitems = [PlanItem(id=jkey[qm], model=judge, prompt=t) for qm, t in jprompt.items()]
        second = asyncio.run(Dispatcher(jitems, cat, judge_file, keys=keys, max_spend=_left(max_spend, answers_file),
                                        **kw).run())
        rep.stopped = rep.stopped or second.stopped
        rep.interrupted = second.interrupted
        rep.failed_examples.update({f"judge {k}": v for k, v in list(second.failed.items())[:5]})
        jj = _answers(judge_file)
        verdicts = {qm: jj[k] for qm, k in jkey.items() if k in jj}
    rows = _rows(ids, names, prompt_of, references, answered, verdicts, scorer, rep, wanted)
    _write_labels(out, rows)
    rep.spent_total = _spent(answers_file) + _spent(judge_file)
    return rep


def _key(query_id: str, model: str, sent: str) -> str:
    """A journal item's id: query, model and a digest of the text sent."""
    import hashlib

    return f"{query_id}{SEP}{model}{SEP}{hashlib.sha256(sent.encode('utf-8')).hexdigest()[:16]}"


def check_label_outputs(out: str | Path, work: str | Path | None = None, option: str = "--out") -> None:
    """Fail before any call is sent unless the labels file `out` (.csv or .parquet) and the
    journal folder `work` (default: OUT.calls beside it) can be written."""
    from optllm.io import check_output_dir, check_output_file

    check_output_file(out, option)
    if Path(out).suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise OptLLMError(f"{option} {out}: labels are written as .csv or .parquet")
    check_output_dir(work if work is not None else work_dir_for(out), "--work")


def _check_writable(out: str | Path, work: Path) -> None:
    check_label_outputs(out, work)
    work.mkdir(parents=True, exist_ok=True)


def _answers(path: Path) -> dict[str, dict[str, Any]]:
    from optllm.dispatch.ledger import read_jsonl

    out: dict[str, dict[str, Any]] = {}
    for rec in read_jsonl(path, repair=False):
        out.setdefault(str(rec.get("id")), rec)
    return out


def _rows(ids: Sequence[str], names: Sequence[str], prompt_of: Mapping[str, str], references: Mapping[str, str] | None,
          answered: Mapping[tuple[str, str], dict[str, Any]], verdicts: Mapping[tuple[str, str], dict[str, Any]],
          scorer: Scorer,
          rep: LabelReport, wanted: set[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    judged = scorer.judge_model is not None
    for m in names:
        rep.unparsed[m] = 0
        rep.cost[m] = 0.0
    for q in ids:
        ref = None if references is None else references.get(q)
        for m in names:
            key = (q, m)
            if wanted is not None and key not in wanted:
                continue
            rec = answered.get(key)
            if rec is None:
                rep.missing += 1
                continue
            answer = str(rec.get("answer") or "")
            judge_cost = 0.0
            if judged:
                v = verdicts.get(key)
                if v is None:  # the judge has not answered this one (failed or capped): no label yet
                    rep.missing += 1
                    continue
                judge_cost = float(v.get("cost") or 0.0)
                score = judge_verdict(v.get("answer"))
                if score is None:
                    rep.judge_unclear += 1
            else:
                score = scorer(answer, "" if ref is None else ref, query_id=q, prompt=prompt_of[q])
            parsed = score is not None
            if not parsed:
                rep.unparsed[m] += 1
            cost = float(rec.get("cost") or 0.0)
            rep.cost[m] += cost
            rep.judge_cost += judge_cost
            rows.append({"query_id": q, "model": m, "correct": float(score or 0.0), "cost": cost,
                         "prompt_tokens": rec.get("prompt_tokens"), "completion_tokens": rec.get("completion_tokens"),
                         "judge_cost": judge_cost, "parsed": parsed, "prompt": prompt_of[q], "answer": answer,
                         "reference": ref})
    rep.labelled = len(rows)
    for m in names:
        got = [r["correct"] for r in rows if r["model"] == m]
        if got:
            rep.accuracy[m] = float(np.mean(got))
    return rows


def _write_labels(out: str | Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    from optllm.io import atomic_path

    df = pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
    with atomic_path(out) as tmp:
        if Path(out).suffix.lower() in (".parquet", ".pq"):
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
