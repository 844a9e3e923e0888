"""The child side of the fault campaign (tests/test_faults.py): one `dispatch` run in a
process the campaign can SIGKILL, SIGINT or SIGTERM.

`python fault_driver.py` is a small fork server: it imports optllm and the HTTP client once,
then for each JSON line `{"cmd": "run", ...}` on stdin forks a child that runs `dispatch` and
writes its report to a file, and answers `{"pid": N}`; `{"cmd": "wait", "pid": N}` answers
with the child's exit status. A fork of this single-threaded process starts in milliseconds,
where a fresh interpreter takes seconds."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def run(items: list[list[Any]], catalogue: dict[str, Any], out: str, result: str, **kw: Any) -> None:
    """Dispatch `items` ([id, prompt, model]) and write the report to `result` (atomically)."""
    from optllm.cost import parse_catalogue
    from optllm.dispatch import dispatch
    from optllm.planning import PlanItem

    cat = parse_catalogue(catalogue, "campaign-models.yaml")
    rep = dispatch([PlanItem(str(i), str(p), str(m)) for i, p, m in items], cat, out, **kw)
    tmp = Path(result + ".tmp")
    tmp.write_text(json.dumps(rep.as_dict()))
    os.replace(tmp, result)


def main() -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "OPENAI_BASE_URL"):
        os.environ.pop(var, None)
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    import openai  # noqa: F401 - loaded once, before any fork

    from optllm.cost import count_tokens
    import optllm.dispatch  # noqa: F401

    count_tokens(["warm up"])  # the tokenizer's tables, once
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "run":
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    run(**msg["args"])
                except BaseException:  # noqa: BLE001 - the child's failure is its exit status
                    import traceback

                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            print(json.dumps({"pid": pid}), flush=True)
        elif msg["cmd"] == "wait":
            _, status = os.waitpid(int(msg["pid"]), 0)
            print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)
        elif msg["cmd"] == "quit":
            return


if __name__ == "__main__":
    main()
