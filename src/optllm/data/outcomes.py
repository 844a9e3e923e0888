"""`Outcomes`: the one core data type — n queries × m LLMs, correctness and cost."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from optllm.data.texts import DiskTexts
from optllm.errors import OptLLMError


@dataclass(frozen=True, eq=False)
class Outcomes:
    """What every LLM did (or would do) on every query.

    `correct[i, k]` in [0, 1] (0/1 labels or a graded score) and `cost[i, k]` in USD per call.
    Validated on construction; arrays are stored read-only so instances can be shared safely.
    """

    query_ids: np.ndarray  # (n,) str or int
    models: tuple[str, ...]  # (m,)
    correct: np.ndarray  # (n, m) float64 in [0, 1]
    cost: np.ndarray  # (n, m) float64 >= 0
    texts: Any = None  # (n,) object array of str, or a DiskTexts (the column left in its Parquet file)
    prompt_tokens: np.ndarray | None = None  # (n, m)
    completion_tokens: np.ndarray | None = None  # (n, m)
    name: str = "outcomes"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        models = tuple(str(m) for m in self.models)
        object.__setattr__(self, "models", models)
        ids = np.asarray(self.query_ids)
        correct = np.asarray(self.correct, dtype=np.float64)
        cost = np.asarray(self.cost, dtype=np.float64)
        where = f"dataset {self.name!r}"
        if ids.ndim != 1:
            raise OptLLMError(f"{where}: query_ids must be one-dimensional, got shape {ids.shape}")
        n, m = ids.shape[0], len(models)
        if m == 0:
            raise OptLLMError(f"{where}: no models")
        if len(set(models)) != m:
            dup = sorted({x for x in models if models.count(x) > 1})
            raise OptLLMError(f"{where}: duplicate model names {dup}")
        for label, arr in (("correct", correct), ("cost", cost)):
            if arr.shape != (n, m):
                raise OptLLMError(f"{where}: {label} has shape {arr.shape}, expected ({n}, {m})")
            bad = ~np.isfinite(arr)
            if bad.any():
                i, k = np.argwhere(bad)[0]
                raise OptLLMError(
                    f"{where}: {label} is NaN/inf for query {ids[i]!r}, model {models[k]!r} "
                    f"({int(bad.sum())} such cells)"
                )
        if n and (correct.min() < 0 or correct.max() > 1):
            i, k = np.argwhere((correct < 0) | (correct > 1))[0]
            raise OptLLMError(
                f"{where}: correct must lie in [0, 1]; query {ids[i]!r}, model {models[k]!r} has {correct[i, k]}"
            )
        if n and cost.min() < 0:
            i, k = np.argwhere(cost < 0)[0]
            raise OptLLMError(
                f"{where}: negative cost {cost[i, k]} for query {ids[i]!r}, model {models[k]!r}"
            )
        # integer ids are distinct exactly when their text is (and 10^7 of them sort in a second)
        uniq, counts = np.unique(ids if ids.dtype.kind in "iu" else ids.astype(str), return_counts=True)
        if uniq.shape[0] != n:
            raise OptLLMError(f"{where}: duplicate query ids, e.g. {uniq[counts > 1][:3].tolist()}")
        texts = self.texts
        if texts is not None and not isinstance(texts, DiskTexts):
            texts = np.asarray(texts, dtype=object)
        if texts is not None and texts.shape != (n,):
            raise OptLLMError(f"{where}: texts has shape {texts.shape}, expected ({n},)")
        for label in ("prompt_tokens", "completion_tokens"):
            arr = getattr(self, label)
            if arr is not None:
                arr = np.asarray(arr, dtype=np.float64)
                if arr.shape != (n, m):
                    raise OptLLMError(f"{where}: {label} has shape {arr.shape}, expected ({n}, {m})")
                arr.setflags(write=False)
                object.__setattr__(self, label, arr)
        for arr in (ids, correct, cost):
            arr.setflags(write=False)
        if isinstance(texts, np.ndarray):
            texts.setflags(write=False)
        object.__setattr__(self, "query_ids", ids)
        object.__setattr__(self, "correct", correct)
        object.__setattr__(self, "cost", cost)
        object.__setattr__(self, "texts", texts)

    # ------------------------------------------------------------------ shape
    @property
    def n(self) -> int:
        """Number of queries."""
        return int(self.correct.shape[0])

    @property
    def m(self) -> int:
        """Number of models."""
        return len(self.models)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"Outcomes(name={self.name!r}, n={self.n}, m={self.m}, models={list(self.models)})"

    # ------------------------------------------------------------------ subsets
    def subset(self, rows: np.ndarray | Sequence[int] | slice) -> "Outcomes":
        """The outcomes of some queries (index array, boolean mask or slice)."""
        idx = np.arange(self.n)[rows] if isinstance(rows, slice) else np.asarray(rows)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return replace(
            self,
            query_ids=self.query_ids[idx],
            correct=self.correct[idx],
            cost=self.cost[idx],
            texts=take(self.texts),
            prompt_tokens=take(self.prompt_tokens),
            completion_tokens=take(self.completion_tokens),
            metadata=dict(self.metadata),
        )

    def select_models(self, models: Sequence[str | int]) -> "Outcomes":
        """The outcomes restricted to some models (names or indices), in the given order."""
        cols = [self.model_index(x) for x in models]

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[:, cols]

        return replace(
            self,
            models=tuple(self.models[k] for k in cols),
            correct=self.correct[:, cols],
            cost=self.cost[:, cols],
            prompt_tokens=take(self.prompt_tokens),
            completion_tokens=take(self.completion_tokens),
            metadata=dict(self.metadata),
        )

    def model_index(self, model: str | int) -> int:
        """Column of a model given by name or index; clear error when unknown."""
        if isinstance(model, (int, np.integer)):
            if not 0 <= int(model) < self.m:
                raise OptLLMError(f"model index {model} out of range 0..{self.m - 1}")
            return int(model)
        try:
            return self.models.index(str(model))
        except ValueError:
            raise OptLLMError(
                f"unknown model {model!r} in {self.name!r}; known: {', '.join(self.models)}"
            ) from None

    # ------------------------------------------------------------------ summaries
    def model_accuracy(self) -> np.ndarray:
        """Mean correctness of each model over all queries, shape (m,)."""
        return self.correct.mean(axis=0) if self.n else np.zeros(self.m)

    def model_total_cost(self) -> np.ndarray:
        """Total cost of sending every query to each model, shape (m,)."""
        return self.cost.sum(axis=0)

    def best_model(self) -> int:
        """Index of the most accurate single model (ties: the cheaper)."""
        acc, tot = self.model_accuracy(), self.model_total_cost()
        return int(np.lexsort((tot, -np.round(acc, 12)))[0])

    def oracle(self) -> tuple[np.ndarray, float, float]:
        """Cheapest correct model per query (cheapest overall where none is correct).

        Returns (assignment, accuracy, total cost). With graded scores the oracle takes the
        best score per query at the lowest cost.
        """
        best = self.correct.max(axis=1, keepdims=True)
        masked = np.where(self.correct >= best, self.cost, np.inf)
        a = masked.argmin(axis=1)
        rows = np.arange(self.n)
        return a, float(self.correct[rows, a].mean()) if self.n else 0.0, float(self.cost[rows, a].sum())

    def summary(self) -> dict[str, Any]:
        """The figures `optllm describe` prints (and its --json shape)."""
        acc, tot = self.model_accuracy(), self.model_total_cost()
        _, oacc, ocost = self.oracle()
        out: dict[str, Any] = {
            "name": self.name,
            "n_queries": self.n,
            "n_models": self.m,
            "models": [
                {
                    "name": name,
                    "accuracy": float(acc[k]),
                    "total_cost": float(tot[k]),
                    "mean_cost": float(tot[k] / self.n) if self.n else 0.0,
                }
                for k, name in enumerate(self.models)
            ],
            "oracle": {"accuracy": oacc, "total_cost": ocost},
            "best_model": self.models[self.best_model()],
        }
        if self.metadata:
            out["metadata"] = self.metadata
        return out
