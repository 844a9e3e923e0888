"""One request's routing decision: features → p for every model → estimated cost →
argmax p − λ·cost (`optllm.serve.pacing`), with the fallbacks along the query's hull and
the spend guard's reservation of every model on it.

Everything here is synchronous and CPU-only; `Router.route` is what the load test times
as the routing overhead (featurise one prompt, predict, count tokens, price, choose).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from optllm.cost import Catalogue, OutputTokens, estimate_costs, fit_output_tokens, get_encoding, prompt_tokens
from optllm.errors import OptLLMError
from optllm.planning.plan import staircase_fallbacks
from optllm.serve.pacing import Pacer


@dataclass(frozen=True)
class Decision:
    """Where one request goes: `model` (catalogue name), then `fallbacks` (the query's
    staircase above it, cheapest first, then below it, as `dispatch --fallback` uses);
    per model (catalogue order of the router) `p`, `cost` (estimated mean, USD, ∞ when the
    prompt does not fit its context) and `prompt_tokens`; `lam` the price used;
    `route_s` the seconds the decision took."""

    model: str
    fallbacks: tuple[str, ...]
    models: tuple[str, ...]
    p: np.ndarray
    cost: np.ndarray
    prompt_tokens: np.ndarray
    lam: float
    route_s: float

    def p_of(self, name: str) -> float:
        return float(self.p[self.models.index(name)]) if name in self.models else float("nan")

    def cost_of(self, name: str) -> float:
        return float(self.cost[self.models.index(name)]) if name in self.models else float("nan")

    @property
    def chain(self) -> tuple[str, ...]:
        return (self.model, *self.fallbacks)


def choose(p: np.ndarray, cost: np.ndarray, lam: float) -> np.ndarray:
    """argmax_k p_k − λ·c_k per row (the exact front's rule); infeasible (∞ cost) never wins
    while a feasible model exists; ties go to the cheaper, then the lower index."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    c = np.atleast_2d(np.asarray(cost, dtype=np.float64))
    with np.errstate(invalid="ignore"):
        score = np.where(np.isfinite(c), p - lam * c, -np.inf)
    best = score.max(axis=1, keepdims=True)
    tie = score >= best - 1e-12 * np.maximum(1.0, np.abs(best))
    cc = np.where(tie, c, np.inf)
    return np.argmin(cc, axis=1)


def tokens_one(text: str, specs: Sequence[Any]) -> np.ndarray:
    """`cost.prompt_tokens([text], catalogue)[0]` (the same encodings and chat overhead) for one
    prompt, without a thread pool per call: (m,) for the model specs `specs`."""
    counts: dict[str, int] = {}
    out = np.empty(len(specs), dtype=np.float64)
    for k, m in enumerate(specs):
        enc = m.encoding
        if enc not in counts:
            counts[enc] = len(get_encoding(enc).encode_ordinary(text))
        out[k] = counts[enc] + m.prompt_overhead_tokens
    return out


class Router:
    """Routes prompts among the predictor's models (all in `catalogue`) at the pacer's λ."""

    def __init__(self, catalogue: Catalogue, predictor: Any, pacer: Pacer,
                 output_tokens: OutputTokens | None = None) -> None:
        models = tuple(predictor.models_)
        self.catalogue = catalogue.select(list(models), what="the predictor's models")
        self.models = models
        self._specs = self.catalogue.models
        self.predictor = predictor
        self.pacer = pacer
        self.output_tokens = output_tokens if output_tokens is not None else fit_output_tokens(self.catalogue)
        if tuple(self.output_tokens.models) != models:
            raise OptLLMError(f"output-length model is for {list(self.output_tokens.models)}, the predictor for "
                              f"{list(models)}")
        self._predict = getattr(predictor, "predict_mean", None) or (lambda X: predictor.predict(X).mean)
        self.route(["warm-up"])  # first call builds the predictor's caches, outside any request

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(p, estimated mean cost, prompt tokens), each (n, m), of `texts`."""
        texts = [str(t) for t in texts]
        p = np.asarray(self._predict(texts), dtype=np.float64)
        pt = self._tokens_one(texts[0]) if len(texts) == 1 else prompt_tokens(texts, self.catalogue)
        cm = estimate_costs(texts, self.catalogue, self.output_tokens, prompt=pt)
        return p, cm.mean, pt

    def _tokens_one(self, text: str) -> np.ndarray:
        return tokens_one(text, self._specs)[None, :]

    def route(self, text: str | Sequence[str], lam: float | None = None) -> Decision:
        """The decision for one prompt (a list: its parts are joined, as the predictor saw prompts)."""
        t0 = time.perf_counter()
        if not isinstance(text, str):
            text = "\n".join(str(x) for x in text)
        p, cost, pt = self.predict([text])
        lam = self.pacer.lam if lam is None else float(lam)
        k = int(choose(p, cost, lam)[0])
        feasible = np.isfinite(cost)
        if not feasible[0, k]:
            raise OptLLMError(f"the prompt ({int(pt[0].min())} tokens) fits the context of none of the models")
        fb = staircase_fallbacks(np.where(feasible, cost, 0.0), p, np.array([k]), self.models, feasible)[0]
        return Decision(self.models[k], fb, self.models, p[0], cost[0], pt[0], lam, time.perf_counter() - t0)
