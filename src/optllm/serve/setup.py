"""From files to a `Server`: the catalogue, the fit (`--from`: a plan folder or a saved
predictor), the starting λ from the exact front of the labelled batch at the budget, the
spend guard (optionally resumed from a ledger), the upstream clients and the metrics.
Every problem is one `OptLLMError` naming the option or file, raised before anything binds."""
from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from optllm.cost import Catalogue, ModelSpec, load_catalogue
from optllm.errors import OptLLMError

DEFAULT_TOKEN_ENV = "OPTLLM_SERVE_TOKEN"
START_SAMPLE = 5000  # prompts of the batch the starting front is built on (a seeded sample beyond)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_token(host: str, token_env: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The clients' bearer token from the variable `token_env` (None: `OPTLLM_SERVE_TOKEN`, and
    unset there means no auth, so only a loopback host; a variable named explicitly must be set)."""
    from optllm.secrets import looks_like_secret, remember

    env = os.environ if environ is None else environ
    name = token_env or DEFAULT_TOKEN_ENV
    if looks_like_secret(name):
        raise OptLLMError("--token-env takes the NAME of an environment variable, not the token itself")
    tok = env.get(name) or None
    if tok is None and token_env:  # a variable named on purpose that holds nothing: not "no auth"
        raise OptLLMError(f"--token-env {name}: that environment variable is not set (or empty); export it, or "
                          f"leave --token-env out to serve on loopback without auth")
    if tok is not None:
        remember(tok)
    if tok is None and not is_loopback(host):
        raise OptLLMError(f"--host {host} is not a loopback address and no client token is set: export {name}="
                          "<a long random token> (clients send it as their API key), or serve on 127.0.0.1")
    return tok


@dataclass(frozen=True)
class Start:
    """Where λ starts and why: the batch it was read from and the front point."""

    lam: float
    n_batch: int
    budget_total: float | None
    point_cost: float
    point_accuracy: float

    def as_dict(self) -> dict[str, Any]:
        return {"lambda0": self.lam, "n_batch": self.n_batch, "budget_total": self.budget_total,
                "front_point_cost_per_request": self.point_cost / max(self.n_batch, 1),
                "front_point_predicted_accuracy": self.point_accuracy}


def starting_lambda(router: Any, texts: Sequence[str], *, rate: float | None = None,
                    target: float | None = None) -> Start:
    """λ₀ = the exact front's slope at ρ·n (budget) or at the target accuracy, on `texts`."""
    from optllm.optimize.front import pareto_front
    from optllm.serve.pacing import lambda_at

    if not texts:
        raise OptLLMError("the batch to start λ from has no prompts")
    p, cost, _ = router.predict(list(texts))
    feasible = np.isfinite(cost)
    big = float(np.nanmax(np.where(feasible, cost, 0.0))) * 1e6 + 1e6
    front = pareto_front(np.where(feasible, p, 0.0), np.where(feasible, cost, big), router.models)
    n = len(texts)
    if rate is not None:
        B = rate * n
        if B < front.costs[0]:
            raise OptLLMError(f"--budget-per-1k {rate * 1000:.6g} is below the cheapest routing of the batch "
                              f"(${front.costs[0] / n * 1000:.6g} per 1k requests)")
        lam = lambda_at(front, budget=B)
        k = max(int(np.searchsorted(front.costs, B, side="right")) - 1, 0)
    else:
        assert target is not None
        if target > front.accuracies[-1] + 1e-12:
            raise OptLLMError(f"--target-accuracy {target} is above the best predicted accuracy of the batch "
                              f"({front.accuracies[-1]:.4f})")
        lam = lambda_at(front, accuracy=target)
        k = min(int(np.searchsorted(front.accuracies, target - 1e-12, side="left")), len(front) - 1)
        B = None
    return Start(lam, n, B, float(front.costs[k]), float(front.accuracies[k]))


def _batch_texts(from_path: Path, prompts: str | None, seed: int) -> list[str]:
    from optllm.planning.prompts import read_prompts

    src = Path(prompts) if prompts else (from_path / "prompts.jsonl" if from_path.is_dir() else None)
    if src is None:
        raise OptLLMError(f"--from {from_path} is a predictor file: give --prompts FILE (the batch λ starts from)")
    if not src.is_file():
        raise OptLLMError(f"{src}: prompts file not found (the batch λ starts from; give --prompts)")
    _, texts = read_prompts(src)
    texts = list(texts)
    if len(texts) > START_SAMPLE:
        idx = np.sort(np.random.default_rng(seed).choice(len(texts), START_SAMPLE, replace=False))
        texts = [texts[i] for i in idx]
    return texts


def check_rate(budget_per_1k: float | None, target_accuracy: float | None) -> tuple[str, float]:
    if (budget_per_1k is None) == (target_accuracy is None):
        raise OptLLMError("give exactly one of --budget-per-1k USD and --target-accuracy A")
    if budget_per_1k is not None:
        if not (math.isfinite(budget_per_1k) and budget_per_1k > 0):
            raise OptLLMError(f"--budget-per-1k must be a positive amount in USD, got {budget_per_1k}")
        return "budget", budget_per_1k / 1000.0
    assert target_accuracy is not None
    if not (math.isfinite(target_accuracy) and 0 < target_accuracy < 1):
        raise OptLLMError(f"--target-accuracy must lie in (0, 1), got {target_accuracy}")
    return "accuracy", target_accuracy


def build_server(models: str | os.PathLike[str], from_path: str | os.PathLike[str], *,
                 budget_per_1k: float | None = None, target_accuracy: float | None = None,
                 max_spend: float | None = None, prompts: str | None = None, shadow: str | None = None,
                 token: str | None = None, log_path: str | None = None, ledger: str | None = None,
                 eta: float = 0.05, max_attempts: int = 3, backoff: float = 0.2, breaker: int = 5,
                 cooldown_s: float = 30.0, rate_wait: float = 1.0, seed: int = 0, environ: Mapping[str, str] | None = None,
                 client_factory: Callable[[ModelSpec, str], Any] | None = None,
                 clock: Callable[[], float] | None = None) -> Any:
    """Everything `optllm serve` needs, checked before anything binds (see the module docstring)."""
    import time

    from optllm.dispatch.client import check_options
    from optllm.dispatch.limits import SpendGuard
    from optllm.planning.fitted import read_fitted
    from optllm.serve.app import Server
    from optllm.serve.metrics import Metrics
    from optllm.serve.pacing import Pacer
    from optllm.serve.router import Router
    from optllm.serve.upstream import Upstreams

    mode, rate = check_rate(budget_per_1k, target_accuracy)
    check_options(max_spend=max_spend, max_attempts=max_attempts, backoff_base=backoff, breaker=breaker)
    if not (math.isfinite(eta) and eta > 0):
        raise OptLLMError(f"--eta must be a positive number, got {eta}")
    if not (math.isfinite(rate_wait) and rate_wait >= 0):
        raise OptLLMError(f"--rate-wait must be a number of seconds >= 0, got {rate_wait}")
    cat: Catalogue = load_catalogue(models)
    fp = Path(from_path)
    fitted = read_fitted(fp)
    missing = [m for m in fitted.models if m not in cat]
    if missing:
        raise OptLLMError(f"{cat.source}: the predictor of {fp} routes model(s) {', '.join(missing)}, "
                          "which the catalogue lacks")
    if shadow is not None and shadow not in cat:
        raise OptLLMError(f"--shadow {shadow!r} is not a catalogue model ({', '.join(cat.names)})")
    keys = cat.check_keys(environ)  # every variable named, none missing: before anything binds
    texts = _batch_texts(fp, prompts, seed)
    pacer = Pacer(mode, rate, 1.0, eta=eta, clock=clock)
    router = Router(cat, fitted.predictor, pacer, fitted.output_tokens)
    start = starting_lambda(router, texts, rate=rate if mode == "budget" else None,
                            target=rate if mode == "accuracy" else None)
    router.pacer = pacer = Pacer(mode, rate, start.lam, eta=eta, clock=clock)
    spent, log = 0.0, None
    if ledger is not None:
        from optllm.dispatch.ledger import DurableLog, ResumeState

        lp = Path(ledger)
        spent = ResumeState.read(lp.with_name(lp.name + ".none"), lp, repair=True).spent
        log = DurableLog(lp).open()
    guard = SpendGuard(max_spend, spent=spent)
    metrics = Metrics(cat.names)
    ups = Upstreams(cat, keys, guard, max_attempts=max_attempts, backoff_base=backoff, breaker=breaker,
                    cooldown_s=cooldown_s, rate_wait_s=rate_wait, seed=seed, client_factory=client_factory, ledger=log,
                    on_error=lambda model, kind: metrics.errors.labels(model, kind).inc())
    ups.warm()
    info = {"started": time.time(), "from": str(fp), "mode": mode, "rate": rate, "start": start.as_dict(),
            "spent_before": spent, "routing_models": list(router.models)}
    return Server(router, ups, cat, metrics, token=token, shadow=shadow, log_path=log_path, info=info)
