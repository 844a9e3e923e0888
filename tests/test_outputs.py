"""Outputs: checked before any work (exit 2, one line naming the option and the path), output
folders written all-or-nothing, files and folders with the normal modes."""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import optllm.io as io
from optllm.cli import app
from optllm.data import load
from optllm.errors import OptLLMError
from optllm.io import atomic_dir, check_output_dir, check_output_file, foreign_files, write_json

runner = CliRunner()
ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "models.yaml"
NO_PROC = not Path("/proc/self").is_dir()


def _tree(d: Path) -> dict[str, bytes | None]:
    """Every entry below `d` with its bytes (None for a folder)."""
    return {str(p.relative_to(d)): (None if p.is_dir() else p.read_bytes()) for p in sorted(d.rglob("*"))}


def _hidden(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------- checks, every command
MISSING = "no-such-input.csv"  # if the output check came after loading, the error would be about this file
FILE, DIR = "file", "dir"
COMMANDS = [  # (argv with OUT for the output, the option, what it expects)
    (["run", MISSING, "--out", "OUT"], "--out", DIR),
    (["demo", "--out", "OUT"], "--out", DIR),
    (["front", MISSING, "--truth", "--out", "OUT"], "--out", FILE),
    (["front", MISSING, "--truth", "--plot", "OUT"], "--plot", FILE),
    (["sample", MISSING, "--out", "OUT"], "--out", FILE),
    (["plan", MISSING, "--models", MISSING, "--labels", MISSING, "--budget", "1", "--out", "OUT"], "--out", DIR),
    (["plan", MISSING, "--models", MISSING, "--labels", "OUT", "--label-budget", "1", "--target-accuracy", "0.9",
      "--out", "PLAN"], "--labels", FILE),
    (["label", MISSING, "--models", MISSING, "--out", "OUT"], "--out", FILE),
    (["label", MISSING, "--models", MISSING, "--out", "LABELS", "--work", "OUT"], "--work", DIR),
    (["bench", MISSING, "--out", "OUT"], "--out", DIR),
    (["coverage", MISSING, "--out", "OUT"], "--out", DIR),
    (["label-budget", MISSING, "--out", "OUT"], "--out", DIR),
    (["compare-optimizers", MISSING, "--json-out", "OUT"], "--json-out", FILE),
    (["predict-eval", MISSING, "--json-out", "OUT"], "--json-out", FILE),
    (["bench-speed", "--sizes", "1e3x3", "--json-out", "OUT"], "--json-out", FILE),
]
BAD = ["wrong kind", "under a file", "unwritable", "read-only folder"]


def _bad_place(tmp_path: Path, kind: str, how: str) -> Path:
    (tmp_path / "afile.csv").write_text("x\n")
    (tmp_path / "adir").mkdir()
    if how == "wrong kind":
        return tmp_path / ("adir" if kind == FILE else "afile.csv")
    if how == "under a file":
        return tmp_path / "afile.csv" / "x.csv"
    if how == "unwritable":
        if NO_PROC:
            pytest.skip("needs /proc")
        return Path("/proc/optllm-test/x.csv")
    if ROOT_USER:
        pytest.skip("root may write in a read-only folder")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro / "x.csv"


@pytest.mark.parametrize("how", BAD)
@pytest.mark.parametrize("argv,option,kind", COMMANDS, ids=[f"{c[0][0]} {c[1]}" for c in COMMANDS])
def test_every_output_option_is_checked_first_with_one_line(tmp_path, monkeypatch, argv, option, kind, how) -> None:
    monkeypatch.chdir(tmp_path)
    bad = _bad_place(tmp_path, kind, how)
    args = [{"OUT": str(bad), "PLAN": str(tmp_path / "p"), "LABELS": str(tmp_path / "l.csv")}.get(a, a) for a in argv]
    before = sorted(p.name for p in tmp_path.iterdir())
    r = runner.invoke(app, args)
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert f"{option} {bad}" in lines[0], lines[0]
    assert MISSING not in lines[0]  # the output was checked before the inputs were even read
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # and nothing was created


def test_check_output_file(tmp_path) -> None:
    assert check_output_file(tmp_path / "new" / "deeper" / "x.csv", "--out") == tmp_path / "new" / "deeper" / "x.csv"
    assert not (tmp_path / "new").exists()  # a check creates nothing
    (tmp_path / "x.csv").write_text("old")
    check_output_file(tmp_path / "x.csv", "--out")
    with pytest.raises(OptLLMError, match="^--out: give a file name"):
        check_output_file("", "--out")
    if Path("/dev/null").exists():
        with pytest.raises(OptLLMError, match="^--out /dev/null: is not a regular file$"):
            check_output_file("/dev/null", "--out")
    if not ROOT_USER:
        (tmp_path / "x.csv").chmod(0o444)
        with pytest.raises(OptLLMError, match="is read-only"):
            check_output_file(tmp_path / "x.csv", "--out")


def test_check_output_dir(tmp_path, monkeypatch) -> None:
    d = tmp_path / "o"
    d.mkdir()
    (d / "plan.csv").write_text("ours")
    (d / ".plan.csv.abc123.tmp").write_text("our leftover temporary")
    (d / "sub").mkdir()
    check_output_dir(d, "--out", ("plan.csv",))
    (d / "data.old").write_text("theirs")  # not a temporary of ours, whatever its suffix
    with pytest.raises(OptLLMError, match=r"^--out .*/o: holds files optllm did not write \(data.old\)"):
        check_output_dir(d, "--out", ("plan.csv",))
    check_output_dir(d, "--work")  # a folder files are added to: others' files are fine
    (d / "x_fronts.png").write_text("ours, by pattern")
    assert foreign_files(d, ("plan.csv", "*_fronts.png")) == ["data.old"]
    monkeypatch.chdir(d)
    with pytest.raises(OptLLMError, match="current folder"):
        check_output_dir(".", "--out", ("plan.csv",))
    with pytest.raises(OptLLMError, match="current folder"):
        check_output_dir(tmp_path, "--out", ("plan.csv",))


def test_helpers_are_exported() -> None:
    assert {"check_output_file", "check_output_dir", "atomic_dir", "atomic_path"} <= set(io.__all__)


# ---------------------------------------------------------------------- all or nothing
def _fail_on(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make optllm.io.write_json fail (disk full) on files called `name`."""
    real = io.write_json

    def failing(path, obj):  # type: ignore[no-untyped-def]
        if Path(path).name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, obj)

    monkeypatch.setattr(io, "write_json", failing)


def test_atomic_dir_failure_leaves_old_folder_or_none(tmp_path) -> None:
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(io.WriteFailed, match="nothing was written"):
        with atomic_dir(out, ("a.json", "b.json")) as tmp:
            write_json(tmp / "a.json", {"run": 1})
            raise OSError(errno.ENOSPC, "No space left on device")
    assert not (tmp_path / "new").exists()  # not even the parents it made
    with atomic_dir(out, ("a.json", "b.json")) as tmp:
        write_json(tmp / "a.json", {"run": 1})
        write_json(tmp / "b.json", {"run": 1})
    (out / "sub").mkdir()
    (out / "sub" / "mine.txt").write_text("kept")
    before = _tree(out)
    with pytest.raises(io.WriteFailed, match=r"^--out .*out: could not be written \(No space left on device\); "
                                             "it was left as it was$"):
        with atomic_dir(out, ("a.json", "b.json")) as tmp:
            write_json(tmp / "a.json", {"run": 2})
            raise OSError(errno.ENOSPC, "No space left on device")
    assert _tree(out) == before and _hidden(out.parent) == []
    with pytest.raises(RuntimeError):  # any failure, not only OSError
        with atomic_dir(out, ("a.json", "b.json")) as tmp:
            write_json(tmp / "a.json", {"run": 3})
            raise RuntimeError("bug")
    assert _tree(out) == before and _hidden(out.parent) == []


def test_atomic_dir_replaces_our_files_keeps_everything_else(tmp_path) -> None:
    out = tmp_path / "out"
    names = ("a.json", "b.json", "*_fronts.png")
    with atomic_dir(out, names) as tmp:
        for f in ("a.json", "b.json", "x_fronts.png"):
            (tmp / f).write_text("run 1")
    (out / "sub").mkdir()
    (out / "sub" / "mine.txt").write_text("kept")
    with atomic_dir(out, names) as tmp:
        (tmp / "a.json").write_text("run 2")
        (out / "late.txt").write_text("a file of theirs that appeared while we worked")
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "late.txt", "sub"]  # b.json, x_fronts.png: stale
    assert (out / "a.json").read_text() == "run 2" and (out / "sub" / "mine.txt").read_text() == "kept"
    assert (out / "late.txt").exists() and _hidden(tmp_path) == []
    (out / "notes.txt").write_text("theirs")
    with pytest.raises(OptLLMError, match="did not write"):
        with atomic_dir(out, names) as tmp:
            pytest.fail("a folder holding other files must be refused before the block runs")
    assert (out / "notes.txt").read_text() == "theirs"


def test_atomic_dir_writes_through_a_link(tmp_path) -> None:
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real, target_is_directory=True)
    for run in (1, 2):
        with atomic_dir(link, ("a.json",)) as tmp:
            write_json(tmp / "a.json", {"run": run})
    assert link.is_symlink() and json.loads((real / "a.json").read_text()) == {"run": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_run_out_is_all_or_nothing(tmp_path, monkeypatch) -> None:
    out = tmp_path / "o"
    argv = ["run", "synthetic:400x3", "--predictor", "base", "--out", str(out), "--json"]
    _fail_on("summary.json", monkeypatch)
    r = runner.invoke(app, argv)
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1] == (
        f"error: --out {out}: could not be written (No space left on device); nothing was written"), r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no front.csv or plan.csv left behind
    monkeypatch.undo()
    assert runner.invoke(app, argv).exit_code == 0
    before = _tree(out)
    _fail_on("summary.json", monkeypatch)
    r = runner.invoke(app, [*argv[:2], "--seed", "1", *argv[2:]])
    assert r.exit_code == 2 and "it was left as it was" in r.output, r.output
    assert _tree(out) == before and _hidden(tmp_path) == []


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    data = load("demo").subset(np.arange(80))
    pd.DataFrame({"id": [f"case-{i}" for i in data.query_ids], "prompt": data.texts}).to_json(
        tmp_path / "prompts.jsonl", orient="records", lines=True)
    rows = [{"query_id": f"case-{data.query_ids[i]}", "model": mdl, "correct": data.correct[i, k],
             "cost": data.cost[i, k]} for i in range(0, 80, 4) for k, mdl in enumerate(data.models)]
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path


def test_plan_out_is_all_or_nothing(ws, monkeypatch) -> None:
    """The issue's case: summary.json cannot be written; front.csv and plan.csv must not be there."""
    out = ws / "plan"
    argv = ["plan", str(ws / "prompts.jsonl"), "--models", str(EXAMPLE), "--labels", str(ws / "labels.csv"),
            "--budget", "0.3", "--predictor", "base", "--out", str(out), "--json"]
    _fail_on("summary.json", monkeypatch)
    r = runner.invoke(app, argv)
    assert r.exit_code == 2 and "could not be written (No space left on device)" in r.output, r.output
    assert not out.exists() and _hidden(ws) == []


def test_bench_out_is_all_or_nothing(tmp_path, monkeypatch) -> None:
    import optllm.evaluate.report as report

    out = tmp_path / "bench"
    monkeypatch.setattr(report, "markdown", lambda results, command="": "old report\n")
    report.write_report({"datasets": {}}, out)
    before = _tree(out)
    assert "report.md" in before and "results.json" in before

    def broken(results, command=""):  # type: ignore[no-untyped-def]
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(report, "markdown", broken)  # report.md is written last
    with pytest.raises(OptLLMError, match="could not be written"):
        report.write_report({"datasets": {}, "new": True}, out)
    assert _tree(out) == before and _hidden(tmp_path) == []


# ---------------------------------------------------------------------- modes
@pytest.fixture
def umask(monkeypatch):
    """Set the process umask for a test (io reads it once: forget what it read)."""
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask: int) -> None:
        os.umask(mask)
        monkeypatch.setattr(io, "_UMASK", None, raising=False)

    yield set_
    os.umask(old)
    io._UMASK = None


@pytest.mark.parametrize("mask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_outputs_get_the_normal_modes(tmp_path, umask, mask) -> None:
    umask(mask)
    write_json(tmp_path / "f.json", {})
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o666 & ~mask
    with atomic_dir(tmp_path / "d", ("a.json",)) as tmp:
        write_json(tmp / "a.json", {})
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "d" / "a.json").stat().st_mode) == 0o666 & ~mask
    assert os.umask(mask) == mask  # reading the umask left it as it was


def test_replaced_outputs_keep_their_mode(tmp_path, umask) -> None:
    umask(0o022)
    write_json(tmp_path / "f.json", {"run": 1})
    (tmp_path / "f.json").chmod(0o640)
    with atomic_dir(tmp_path / "d", ("a.json",)) as tmp:
        write_json(tmp / "a.json", {})
    (tmp_path / "d").chmod(0o750)
    write_json(tmp_path / "f.json", {"run": 2})
    with atomic_dir(tmp_path / "d", ("a.json",)) as tmp:
        write_json(tmp / "a.json", {})
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750


def test_a_table_written_in_chunks_is_the_table_written_at_once(tmp_path):
    import pandas as pd

    from optllm.io import write_csv_chunks

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"id": [f"q{i}" for i in range(10)], "model": rng.choice(["a", 'b,"c"'], 10),
                       "cost": rng.random(10) / 7, "n": np.arange(10)})
    for chunk in (1, 3, 10, 64):
        write_csv_chunks(tmp_path / "t.csv", len(df), lambda lo, hi: df.iloc[lo:hi], chunk=chunk)
        assert (tmp_path / "t.csv").read_text() == df.to_csv(index=False), chunk
    write_csv_chunks(tmp_path / "e.csv", 0, lambda lo, hi: df.iloc[lo:hi])
    assert (tmp_path / "e.csv").read_text() == df.iloc[:0].to_csv(index=False)
