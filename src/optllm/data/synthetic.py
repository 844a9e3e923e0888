"""A seeded generator of realistic instances of any size (item-response style).

Each query has a difficulty, each model an ability and a price tier; P(correct) is a logistic
of ability − difficulty plus a per-pair specialisation term; cost grows with prompt length
(log-normal) times the model's per-token price. A few models are dominated (pricier and
weaker). 10^6 × 12 takes a few seconds.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from optllm.data.outcomes import Outcomes
from optllm.errors import OptLLMError


def synthetic(
    n: int = 10_000,
    m: int = 12,
    seed: int = 0,
    labels: bool = True,
    texts: bool = False,
    dtype: type = np.float64,
    templates: int = 0,
    hidden: float = 0.0,
) -> Outcomes:
    """Generate an `Outcomes` with n queries and m models.

    `labels=True` samples 0/1 correctness from the probabilities (kept in
    metadata["p_true"] only when n·m is small); `labels=False` stores the probabilities.

    Harder worlds for the guarantees (`synthetic-hidden`): `templates` > 0 groups the queries
    into that many templates of very unequal size (near-duplicate texts, like log lines of one
    template) whose models succeed or fail together (a per-template × model logit offset);
    `hidden` > 0 adds a per-cluster × model offset of that scale over 20 clusters the text
    never shows, so the predictor cannot see that part of the link.
    """
    rng = np.random.default_rng(seed)
    ability, price_per_token = _world(rng, m)
    correct, cost, txt, meta = _queries(rng, n, ability, price_per_token, labels, texts, dtype, templates, hidden)
    meta = {"source": "synthetic", "seed": seed, **meta}
    return Outcomes(
        query_ids=np.arange(n),
        models=tuple(f"model_{k:02d}" for k in range(m)),
        correct=correct,
        cost=cost,
        texts=txt,
        name=f"synthetic(n={n}, m={m}, seed={seed})",
        metadata=meta,
    )


def _world(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The models: abilities (sorted) and USD prices per token, a few dominated."""
    ability = np.sort(rng.normal(0.0, 1.0, m))
    # price tier rises with ability, with noise so some models are dominated
    log_price = -7.0 + 2.5 * (ability - ability.min()) / max(np.ptp(ability), 1e-9)
    log_price = log_price + rng.normal(0.0, 0.6, m)
    price_per_token = np.exp(log_price) / 1000.0  # USD per token
    n_dominated = max(0, m // 6)
    if n_dominated:
        worst = np.argsort(ability)[:n_dominated]
        price_per_token[worst] = price_per_token.max() * rng.uniform(0.5, 1.0, n_dominated)
    return ability, price_per_token


def _queries(rng: np.random.Generator, n: int, ability: np.ndarray, price_per_token: np.ndarray, labels: bool,
             texts: bool, dtype: type, templates: int, hidden: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """n queries of the world: (correct or P(correct), cost, texts or None, metadata)."""
    m = ability.size
    difficulty = rng.normal(0.0, 1.2, n).astype(dtype)
    tokens = np.exp(rng.normal(5.0, 0.7, n)).astype(dtype)  # prompt length
    spec = rng.normal(0.0, 0.8, (n, m)).astype(dtype)  # query × model specialisation
    logit = (ability.astype(dtype)[None, :] - difficulty[:, None]) * 1.6 + spec
    template = None
    if templates > 0:
        sizes = rng.pareto(1.2, templates) + 1.0
        template = rng.choice(templates, size=n, p=sizes / sizes.sum())
        logit = logit + rng.normal(0.0, 1.0, (templates, m)).astype(dtype)[template]
    if hidden > 0:
        cluster = rng.integers(0, 20, n)
        logit = logit + rng.normal(0.0, hidden, (20, m)).astype(dtype)[cluster]
    p = 1.0 / (1.0 + np.exp(-logit))
    out_tokens = rng.uniform(0.8, 1.2, (n, m)).astype(dtype) * 30.0
    cost = (tokens[:, None] + out_tokens) * price_per_token.astype(dtype)[None, :]
    meta: dict = {
        "generator": "item-response: logistic(1.6·(ability − difficulty) + specialisation)",
        "templates": templates, "hidden": hidden,
    }
    if template is not None:
        meta["template"] = template
    if labels:
        correct = (rng.random((n, m), dtype=np.float64 if dtype is np.float64 else np.float32) < p).astype(dtype)
        if n * m <= 200_000:
            meta["p_true"] = p
    else:
        correct = p
    txt = None
    if texts:
        vocab = np.array(["alpha", "beta", "gamma", "delta", "log", "parse", "legal", "court",
                          "math", "code", "error", "sum", "prove", "list", "query", "model"])
        words = rng.integers(0, len(vocab), (n, 8))
        bucket = np.clip(((difficulty + 3) / 6 * 4).astype(int), 0, 3)
        if template is None:
            txt = np.array([f"level{b} " + " ".join(vocab[w]) for b, w in zip(bucket, words)], dtype=object)
        else:  # one text per template, only a number differs (near-duplicates)
            tw = rng.integers(0, len(vocab), (templates, 6))
            num = rng.integers(0, 10_000, n)
            txt = np.array([f"level{b} " + " ".join(vocab[tw[c]]) + f" id {k}" for b, c, k in zip(bucket, template, num)],
                           dtype=object)
    return correct, cost, txt, meta


def write_synthetic(path: str, n: int, m: int = 12, seed: int = 0, chunk_rows: int = 500_000,
                    row_group: int = 65_536, progress: Callable[[int], None] | None = None) -> None:
    """Write a synthetic world of n queries × m models with texts to a wide Parquet file
    (`query_id, query, model_XX, model_XX_cost`), `chunk_rows` queries generated at a time,
    so memory holds one chunk whatever n is; `load(path)` then leaves the texts on disk.

    The models are drawn as `synthetic(seed=seed)` draws them; each chunk's queries from
    their own stream (seed, chunk), so the queries differ from the in-memory generator's
    (same distribution). Written atomically. `progress(k)`: called with the rows written so far."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from optllm.io import atomic_path

    if n < 2 or m < 1:
        raise OptLLMError(f"write_synthetic: needs at least 2 queries and 1 model, got n={n}, m={m}")
    rng = np.random.default_rng(seed)
    ability, price = _world(rng, m)
    names = [f"model_{k:02d}" for k in range(m)]
    with atomic_path(path) as tmp:
        writer = None
        try:
            for c, lo in enumerate(range(0, n, chunk_rows)):
                k = min(n, lo + chunk_rows) - lo
                correct, cost, txt, _ = _queries(np.random.default_rng([seed, c + 1]), k, ability, price,
                                                 True, True, np.float64, 0, 0.0)
                cols = {"query_id": pa.array(np.arange(lo, lo + k, dtype=np.int64)),
                        "query": pa.array(txt.tolist(), type=pa.string())}
                for j, name in enumerate(names):
                    cols[name] = pa.array(correct[:, j].astype(np.int8))
                    cols[f"{name}_cost"] = pa.array(cost[:, j])
                table = pa.table(cols)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table, row_group_size=row_group)
                if progress is not None:
                    progress(lo + k)
        finally:
            if writer is not None:
                writer.close()
