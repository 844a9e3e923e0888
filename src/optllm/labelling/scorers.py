"""Scorers: whether an answer is correct, given the query's reference answer.

A scorer is named by one string (`--scorer`):

- `exact`: the answer equals the reference, after stripping outer whitespace;
- `normalised` (default): equal after lower-casing, removing punctuation and articles
  (a/an/the) and collapsing whitespace (SQuAD's normalisation);
- `number` or `number:TOL`: the answer's number (after `####`, `\\boxed{`, "final answer",
  "the answer is" or "answer:" when present, else its last number) equals the reference's
  (marked the same way, else its only number) within TOL (absolute or relative, default
  1e-6); `1,234.5`, `$12` and `−5` are read as numbers, `10-20` as 10 and 20;
- `choice`: a multiple-choice letter (A-J, upper case): the last "the answer is B", else
  "\\boxed{B}" or "**B**", "(B)", a leading "B." or a bare "B", "option B"; compared with the
  reference's letter;
- `regex:PATTERN`: the first match of PATTERN in the answer (its first group, when it has one),
  normalised, equals the normalised reference;
- `contains`: the normalised reference occurs in the normalised answer as whole words;
- `python:MODULE:FUNCTION`: your own function `FUNCTION(answer: str, reference: str, *,
  query_id: str, prompt: str) -> bool | float | None` (a float must be 0 or 1; None means
  "could not parse");
- `judge:MODEL`: an LLM judge, one of the catalogue's models, asked with `JUDGE_RUBRIC` (see
  `optllm.labelling.label`); its calls are part of the labelling cost.

Every scorer returns 1.0, 0.0, or None when the answer cannot be parsed (no number, no letter,
no match); `label` counts those, reports them and scores them 0 (an answer in the wrong form
is not a usable one).
"""
from __future__ import annotations

import importlib
import math
import re
import string
from dataclasses import dataclass
from typing import Any, Callable

from optllm.errors import OptLLMError

SCORERS = ("exact", "normalised", "number", "choice", "regex:PATTERN", "contains", "python:MODULE:FUNCTION",
           "judge:MODEL")
DEFAULT_SCORER = "normalised"

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_PUNCT = str.maketrans("", "", string.punctuation)
# a sign only where no digit or letter comes before it ("10-20" is 10 and 20, not -20)
_NUMBER = re.compile(r"(?:(?<![\w.])[-+\u2212])?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_FINAL = re.compile(r"(?:####|\\boxed\{|(?i:final answer|the answer is|answer:))\s*([^\n]*)")
_CHOICE_PATTERNS = (  # the letter itself is upper case ("the answer is a bit..." is no letter)
    re.compile(r"(?i:answer(?:\s+is)?|answer:)\s*:?\s*[(*\[]*([A-J])(?![A-Za-z])"),
    re.compile(r"\\boxed\{([A-J])\}|\*\*([A-J])\*\*"),
    re.compile(r"\(([A-J])\)"),
    re.compile(r"^\s*([A-J])(?:[.):]|\s*$)"),
    re.compile(r"(?i:option|choice|choose|pick)\s*:?\s*[(*]*([A-J])(?![A-Za-z])"),
)


def normalise(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces."""
    t = str(text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", t).split())


def numbers_in(text: str) -> list[float]:
    """Every number in `text`, thousands separators removed (a Unicode minus is a minus)."""
    out: list[float] = []
    for m in _NUMBER.finditer(str(text)):
        try:
            out.append(float(m.group(0).replace(",", "").replace("\u2212", "-")))
        except ValueError:
            continue
    return out


def final_number(text: str, last: bool = True) -> float | None:
    """The number an answer (or a reference) gives: after a final-answer marker (`####`,
    `\\boxed{`, "final answer", "the answer is", "answer:") when there is one, else the last
    number of the text (`last`) or its only number (references: None when it has several)."""
    t = str(text)
    marked = list(_FINAL.finditer(t))
    if marked:
        got = numbers_in(marked[-1].group(1))
        if got:
            return got[0]
    got = numbers_in(t)
    if not got:
        return None
    if last:
        return got[-1]
    return got[0] if len(got) == 1 else None


def choice_letter(text: str) -> str | None:
    """The multiple-choice letter an answer gives, or None: an explicit "answer is X" first
    (its last one), then a boxed or bold letter, "(X)", a leading "X." and "option X"."""
    t = str(text).strip()
    for pat in _CHOICE_PATTERNS:
        found = [next(g for g in m.groups() if g) for m in pat.finditer(t)]
        if found:
            return found[-1].upper()
    return None


@dataclass(frozen=True)
class Scorer:
    """A parsed `--scorer`: `name` as given, `kind`, and its argument (tolerance, pattern,
    function, judge model)."""

    name: str
    kind: str
    arg: Any = None

    @property
    def judge_model(self) -> str | None:
        return self.arg if self.kind == "judge" else None

    @property
    def needs_reference(self) -> bool:
        """Every scorer but the judge compares with a reference (the judge uses one if given)."""
        return self.kind != "judge"

    def reference_value(self, reference: str, query_id: str = "") -> Any:
        """What a reference says for `number` (its number) and `choice` (its letter); a
        one-line error when it says nothing usable. `label` checks every reference with it
        before any call is made."""
        r = "" if reference is None else str(reference)
        if self.kind == "number":
            y = final_number(r, last=False)
            if y is None:
                raise OptLLMError(f"--scorer {self.name}: reference {r[:60]!r} of query {query_id!r} has no single "
                                  "number (mark it with '#### N' when it holds several)")
            return y
        if self.kind == "choice":
            want = choice_letter(r.upper() if len(r.strip()) <= 3 else r)
            if want is None:
                raise OptLLMError(f"--scorer choice: reference {r[:60]!r} of query {query_id!r} is not a letter A-J")
            return want
        return r

    def __call__(self, answer: str, reference: str, *, query_id: str = "", prompt: str = "") -> float | None:
        """1.0 / 0.0, or None when the answer cannot be parsed (not for `judge`: see `label`)."""
        a, r = "" if answer is None else str(answer), "" if reference is None else str(reference)
        k = self.kind
        if k == "exact":
            return float(a.strip() == r.strip())
        if k == "normalised":
            return float(normalise(a) == normalise(r))
        if k == "contains":  # whole words: "no" is not in "nothing"
            nr = normalise(r)
            return float(bool(nr) and f" {nr} " in f" {normalise(a)} ")
        if k == "number":
            x = final_number(a)
            if x is None:
                return None
            y = self.reference_value(r, query_id)
            return float(math.isclose(x, y, rel_tol=self.arg, abs_tol=self.arg))
        if k == "choice":
            got = choice_letter(a)
            if got is None:
                return None
            return float(got == self.reference_value(r, query_id))
        if k == "regex":
            m = self.arg.search(a)
            if m is None:
                return None
            found = next((g for g in m.groups() if g is not None), m.group(0))
            return float(normalise(found) == normalise(r))
        if k == "python":
            try:
                v = self.arg(a, r, query_id=query_id, prompt=prompt)
            except Exception as e:  # noqa: BLE001 - the user's function: report which query broke it
                raise OptLLMError(f"--scorer {self.name}: raised {type(e).__name__} on query {query_id!r}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''}") from None
            return _as_score(v, self.name, query_id)
        raise OptLLMError(f"--scorer {self.name}: a judge scores through `optllm label`, not directly")


def _as_score(v: Any, name: str, query_id: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return float(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise OptLLMError(f"--scorer {name}: returned {v!r} for query {query_id!r}; expected True/False, 0/1 or None")
    if f not in (0.0, 1.0):
        raise OptLLMError(f"--scorer {name}: returned {f!r} for query {query_id!r}; a score must be 0 or 1")
    return f


def parse_scorer(spec: str) -> Scorer:
    """`--scorer` → `Scorer` (a one-line `OptLLMError` naming the choices otherwise)."""
    s = str(spec).strip()
    head, _, rest = s.partition(":")
    head = head.lower()
    if head in ("exact", "normalised", "normalized", "contains", "choice") and not rest:
        return Scorer(s, "normalised" if head == "normalized" else head)
    if head == "number":
        tol = 1e-6
        if rest:
            try:
                tol = float(rest)
            except ValueError:
                tol = -1.0
            if not (tol >= 0 and math.isfinite(tol)):
                raise OptLLMError(f"--scorer {s}: the tolerance after 'number:' must be a non-negative number")
        return Scorer(s, "number", tol)
    if head == "regex":
        if not rest:
            raise OptLLMError("--scorer regex: give the pattern, e.g. regex:'answer is (\\w+)'")
        try:
            return Scorer(s, "regex", re.compile(rest, re.IGNORECASE | re.DOTALL))
        except re.error as e:
            raise OptLLMError(f"--scorer {s}: not a regular expression ({e})") from None
    if head == "python":
        return Scorer(s, "python", _load_function(s, rest))
    if head == "judge":
        if not rest:
            raise OptLLMError("--scorer judge: name the judge model from the catalogue, e.g. judge:gpt-4o")
        return Scorer(s, "judge", rest)
    raise OptLLMError(f"--scorer {s!r}: unknown scorer; choose from {', '.join(SCORERS)}")


def _load_function(spec: str, path: str) -> Callable[..., Any]:
    mod, _, fn = path.rpartition(":")
    if not mod or not fn:
        raise OptLLMError(f"--scorer {spec}: write python:MODULE:FUNCTION, e.g. python:my_scorers:grade")
    try:
        module = importlib.import_module(mod)
    except Exception as e:  # noqa: BLE001 - the user's module: any import error is theirs to see
        raise OptLLMError(f"--scorer {spec}: cannot import module {mod!r} ({type(e).__name__}: {e})") from None
    f = getattr(module, fn, None)
    if not callable(f):
        raise OptLLMError(f"--scorer {spec}: module {mod!r} has no function {fn!r}")
    return f


# ---------------------------------------------------------------------- the judge
JUDGE_RUBRIC = """You are grading an answer to a question. Decide whether the ANSWER is correct.
{reference_block}Judge only correctness of the final answer, not style or length. An answer that hedges between several options, or gives none, is incorrect.
Reply with exactly one word: CORRECT or INCORRECT.

QUESTION:
{prompt}

ANSWER:
{answer}
"""
_REFERENCE_BLOCK = "A correct REFERENCE answer is given; the ANSWER is correct if it agrees with it.\n\nREFERENCE:\n{reference}\n\n"


def judge_prompt(prompt: str, answer: str, reference: str | None, rubric: str = JUDGE_RUBRIC) -> str:
    """The prompt the judge model gets for one answer."""
    block = _REFERENCE_BLOCK.format(reference=reference) if reference not in (None, "") else ""
    return rubric.format(reference_block=block, prompt=prompt, answer=answer)


_VERDICT = re.compile(r"\b(INCORRECT|NOT\s+CORRECT|CORRECT)\b", re.IGNORECASE)


def judge_verdict(reply: str) -> float | None:
    """The judge's verdict, its last word on it: 1.0 (CORRECT), 0.0 (INCORRECT or "not
    correct"), None when it says neither."""
    found = _VERDICT.findall(str(reply or ""))
    if not found:
        return None
    return 1.0 if found[-1].upper() == "CORRECT" else 0.0
