"""Command-line interface: thin typer commands over the Python API.

Every user error is an `OptLLMError`; `main()` prints it as one line on stderr and exits 2.
"""
from __future__ import annotations

import sys

from optllm.cli.app import app, err_console
from optllm.errors import OptLLMError

# Each module adds its commands to `app` on import.
from optllm.cli import data_cmds  # noqa: F401,E402


def main() -> None:
    """Console-script entry point."""
    try:
        app(standalone_mode=True)
    except OptLLMError as e:
        err_console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
