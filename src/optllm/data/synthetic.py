"""A seeded generator of realistic instances of any size (item-response style).

Each query has a difficulty, each model an ability and a price tier; P(correct) is a logistic
of ability − difficulty plus a per-pair specialisation term; cost grows with prompt length
(log-normal) times the model's per-token price. A few models are dominated (pricier and
weaker). 10^6 × 12 takes a few seconds.
"""
from __future__ import annotations

import numpy as np

from optllm.data.outcomes import Outcomes


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
    ability = np.sort(rng.normal(0.0, 1.0, m))
    # price tier rises with ability, with noise so some models are dominated
    log_price = -7.0 + 2.5 * (ability - ability.min()) / max(np.ptp(ability), 1e-9)
    log_price = log_price + rng.normal(0.0, 0.6, m)
    price_per_token = np.exp(log_price) / 1000.0  # USD per token
    n_dominated = max(0, m // 6)
    if n_dominated:
        worst = np.argsort(ability)[:n_dominated]
        price_per_token[worst] = price_per_token.max() * rng.uniform(0.5, 1.0, n_dominated)
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
        "source": "synthetic",
        "seed": seed,
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
    return Outcomes(
        query_ids=np.arange(n),
        models=tuple(f"model_{k:02d}" for k in range(m)),
        correct=correct,
        cost=cost,
        texts=txt,
        name=f"synthetic(n={n}, m={m}, seed={seed})",
        metadata=meta,
    )
