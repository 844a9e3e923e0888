"""The paper's protocol: a small labelled train and validation sample, the rest to assign."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optllm.data.outcomes import Outcomes
from optllm.errors import OptLLMError


@dataclass(frozen=True)
class Split:
    """Row indices of one random split; `train`/`val` are labelled, `test` is assigned."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int

    def parts(self, data: Outcomes) -> tuple[Outcomes, Outcomes, Outcomes]:
        """The three subsets of `data`."""
        return data.subset(self.train), data.subset(self.val), data.subset(self.test)


def _count(size: float | int, n: int, label: str) -> int:
    if isinstance(size, (bool, np.bool_)) or size < 0:
        raise OptLLMError(f"{label} must be a non-negative fraction or count, got {size!r}")
    if isinstance(size, (int, np.integer)) and not (isinstance(size, float)):
        k = int(size)
    elif size < 1:
        k = int(round(float(size) * n))
    elif float(size).is_integer():
        k = int(size)
    else:
        raise OptLLMError(f"{label} {size!r}: give a fraction below 1 or a whole count")
    return k


def split(
    data: Outcomes | int,
    train: float | int = 0.01,
    val: float | int = 0.01,
    seed: int = 0,
    min_train: int = 2,
) -> Split:
    """Deterministic random split by fraction (< 1) or count (>= 1) for a given seed.

    A fraction that rounds to fewer than `min_train` training queries is raised to it, so
    tiny datasets still get a usable labelled sample; 0, or a count below `min_train`, is an
    error (nothing to fit the predictor on).
    """
    n = data if isinstance(data, int) else data.n
    k_train = _count(train, n, "--train-frac")
    if float(train) == 0:  # not a tiny fraction raised to min_train: none asked for
        raise OptLLMError(f"--train-frac {train!r} leaves no labelled training queries; give a fraction "
                          f"(0 < f < 1) or a count of at least {min_train}")
    if k_train < min_train and float(train) >= 1:
        raise OptLLMError(f"--train-frac {train!r}: the predictor needs at least {min_train} labelled "
                          f"training queries")
    k_train = max(k_train, min(min_train, n))
    k_val = _count(val, n, "--val-frac")
    if k_train + k_val >= n:
        raise OptLLMError(
            f"train ({k_train}) + validation ({k_val}) leave no queries to assign out of {n}"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return Split(
        train=np.sort(perm[:k_train]),
        val=np.sort(perm[k_train : k_train + k_val]),
        test=np.sort(perm[k_train + k_val :]),
        seed=seed,
    )
