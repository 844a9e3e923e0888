"""`optllm serve`: an OpenAI-compatible router that keeps a budget online."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from optllm.cli.app import app, err_console
from optllm.errors import OptLLMError


def _need_extra() -> None:
    missing = []
    for mod, pkg in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("prometheus_client", "prometheus-client")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(pkg)
    if missing:
        raise OptLLMError(f"optllm serve needs {', '.join(missing)}: pip install 'optllm[serve]'")


@app.command()
def serve(
    models: Path = typer.Option(..., "--models", help="Model catalogue (YAML or TOML): prices, base_url, api_key_env (the NAME of the variable holding each upstream key)."),
    from_: Path = typer.Option(..., "--from", help="A plan folder written by `optllm plan` (its predictor.joblib, output_tokens.json and prompts.jsonl), or a predictor file saved with save_predictor (then give --prompts)."),
    budget_per_1k: Optional[float] = typer.Option(None, "--budget-per-1k", help="Budget in USD per 1,000 routed requests: lambda starts at the exact front's slope at this rate on the batch and is paced online against it."),
    target_accuracy: Optional[float] = typer.Option(None, "--target-accuracy", help="Instead of a budget: the mean predicted accuracy to keep (lambda starts at the front point reaching it)."),
    max_spend: Optional[float] = typer.Option(None, "--max-spend", help="Hard cap in USD on everything this server spends (routed and direct calls): each call reserves its upper-bound cost first, as dispatch does."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs a client token (--token-env)."),
    port: int = typer.Option(8000, "--port", help="Port to bind."),
    token_env: str = typer.Option(None, "--token-env", help="NAME of the environment variable holding the clients' bearer token (clients pass it as their API key); default OPTLLM_SERVE_TOKEN, whose absence means no auth, loopback only. A variable named here must be set."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Prompts (JSONL/CSV with id, prompt) of the batch lambda starts from (default: the plan folder's prompts.jsonl)."),
    shadow: Optional[str] = typer.Option(None, "--shadow", help="Shadow mode: send every request to this catalogue model and only log what the router would have chosen (with its predicted accuracy and cost)."),
    log: Optional[Path] = typer.Option(None, "--log", help="JSONL file of every routed decision: served and routed model, predicted accuracy and cost, lambda, routing time (never the prompt)."),
    ledger: Optional[Path] = typer.Option(None, "--ledger", help="Durable spend ledger (dispatch's format): every reservation and bill is fsynced; a restart resumes its spend under --max-spend."),
    eta: float = typer.Option(0.05, "--eta", help="Step of lambda's online update (log-lambda moves by eta x (cost - rate) / rate per answered request)."),
    max_attempts: int = typer.Option(3, "--max-attempts", help="Tries per upstream model on 429/5xx/timeouts before falling back along the hull."),
    rate_wait: float = typer.Option(1.0, "--rate-wait", help="Seconds a request may wait when every model of its route is at its catalogue rpm/tpm limit (a model at its limit is otherwise passed over for the next one along the hull at once); then 429 with Retry-After."),
    seed: int = typer.Option(0, "--seed", help="Seeds the backoff jitter and the sample of the batch lambda starts from."),
) -> None:
    """Serve `POST /v1/chat/completions` (plain and streamed), `GET /v1/models`, `/metrics`
    and `/healthz` on HOST:PORT. Point any OpenAI client at http://HOST:PORT/v1 with model
    `optllm-auto`: each request goes to argmax p - lambda x cost among the plan's models,
    lambda paced online against the budget; a catalogue model name calls it directly."""
    _need_extra()
    from optllm.serve.setup import build_server, client_token

    if not 0 < port < 65536:
        raise OptLLMError(f"--port must lie in 1..65535, got {port}")
    token = client_token(host, token_env)
    server = build_server(models, from_, budget_per_1k=budget_per_1k, target_accuracy=target_accuracy,
                          max_spend=max_spend, prompts=str(prompts) if prompts else None, shadow=shadow,
                          token=token, log_path=str(log) if log else None, ledger=str(ledger) if ledger else None,
                          eta=eta, max_attempts=max_attempts, rate_wait=rate_wait, seed=seed)
    _check_port(host, port)
    import uvicorn

    from optllm.serve.app import create_app

    st = server.info["start"]
    unit = (f"${server.info['rate'] * 1000:.6g} per 1k requests" if server.info["mode"] == "budget"
            else f"target accuracy {server.info['rate']}")
    err_console.print(f"optllm serve: {len(server.router.models)} routing models, {unit}; lambda starts at "
                      f"{st['lambda0']:.6g} (front of {st['n_batch']} batch prompts: predicted accuracy "
                      f"{st['front_point_predicted_accuracy']:.3f} at ${st['front_point_cost_per_request'] * 1000:.6g} "
                      f"per 1k){'; shadow: every request to ' + shadow if shadow else ''}; "
                      f"{'bearer token required' if token else 'no auth (loopback only)'}; "
                      f"http://{host}:{port}/v1", markup=False, highlight=False, emoji=False, soft_wrap=True)
    uvicorn.run(create_app(server), host=host, port=port, log_level="warning", access_log=False)


def _check_port(host: str, port: int) -> None:
    """A port already taken is one line, before uvicorn prints its own traceback-free exit."""
    import socket

    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise OptLLMError(f"--host {host} --port {port}: cannot bind ({e.strerror or e})") from None
