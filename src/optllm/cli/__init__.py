"""Command-line interface: thin typer commands over the Python API.

Every user error is an `OptLLMError`; each command is wrapped so that it prints as one line
on stderr and exits with code 2 (also under typer's test runner).
"""
from __future__ import annotations

import functools
import math
import os
import sys
from typing import Any, Callable

import typer

from optllm.cli.app import app, console, err_console
from optllm.errors import OptLLMError
from optllm.secrets import redact

# Each module adds its commands to `app` on import.
from optllm.cli import data_cmds  # noqa: F401,E402
from optllm.cli import run_cmds  # noqa: F401,E402
from optllm.cli import bench_cmds  # noqa: F401,E402
from optllm.cli import predict_cmds  # noqa: F401,E402
from optllm.cli import plan_cmds  # noqa: F401,E402
from optllm.cli import compare_cmds  # noqa: F401,E402
from optllm.cli import front_cmds  # noqa: F401,E402
from optllm.cli import coverage_cmds  # noqa: F401,E402
from optllm.cli import label_cmds  # noqa: F401,E402
from optllm.cli import label_budget_cmds  # noqa: F401,E402
from optllm.cli import serve_cmds  # noqa: F401,E402


def one_line(e: BaseException) -> str:
    """An error as printed: one line, keys and anything that looks like one hidden."""
    return " ".join(redact(str(e)).split())


def _check_shared_options(kwargs: dict[str, Any]) -> None:
    """Options several commands share, checked once for all of them before any work."""
    seed = kwargs.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed < 0:  # numpy's generators refuse it
        raise OptLLMError(f"--seed must be a non-negative integer, got {seed}")
    folds = kwargs.get("folds")  # cross-fitting folds wherever the option exists
    if isinstance(folds, int) and not isinstance(folds, bool) and not (folds == 0 or folds >= 2):
        raise OptLLMError(f"--folds must be 0 (no cross-fitting) or at least 2, got {folds}")
    alpha = kwargs.get("alpha")
    if isinstance(alpha, float) and not math.isfinite(alpha):
        raise OptLLMError(f"--alpha must be a finite number, got {alpha}")


def _usage_error_on_one_line(e: Any) -> None:
    """typer's handler for usage errors (an option that is not a number, a missing option, an
    unknown one), replaced so they print as one line like every other error (exit code 2)."""
    if e.__class__.__name__ == "NoArgsIsHelpError":  # `optllm CMD` alone prints the help, as before
        return
    ctx = getattr(e, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    err_console.print(f"error: {' '.join(redact(e.format_message()).split())}{hint}", markup=False, highlight=False,
                      emoji=False, soft_wrap=True)


def _install_usage_errors() -> None:
    from typer import rich_utils

    rich_utils.rich_format_error = _usage_error_on_one_line


_install_usage_errors()


def _one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _check_shared_options(kwargs)
            return fn(*args, **kwargs)
        except OptLLMError as e:
            err_console.print(f"error: {one_line(e)}", markup=False, highlight=False, emoji=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


for _cmd in app.registered_commands:
    if _cmd.callback is not None and not getattr(_cmd.callback, "_one_line", False):
        _cmd.callback = _one_line_errors(_cmd.callback)
        _cmd.callback._one_line = True  # type: ignore[attr-defined]


def main() -> None:
    """Console-script entry point."""
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = 160  # a pipe, a file or a CI log: rich's 80 columns would cut the tables' columns
    try:
        app()
    except OptLLMError as e:  # raised outside a command (should not happen)
        err_console.print(f"error: {one_line(e)}", markup=False, highlight=False, emoji=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
