import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one worker per core: one torch thread each, in this process and in the commands it starts
    # (two threads per worker on two cores would make the workers fight over the cores)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


# Test files whose module fixtures take minutes (the smoke suite), train a suite's models once for several
# tests (test_suite_stages.py) or read a real data set: each runs on one worker, so the fixture runs once,
# while every other test goes to whichever worker is free. (xdist's own ``--dist loadgroup`` would say
# this with marks, but with pytest 9.2 it silently stops grouping: pytest-dev/pytest-xdist#1386.) By file
# name, whatever the rootdir.
ONE_WORKER_FILES = {"test_bench_suite.py", "test_real_data.py", "test_suite_stages.py"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist load``, except that each of ``ONE_WORKER_FILES`` is one unit of work."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LoadKeepingSomeFilesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if path.rsplit("/", 1)[-1] in ONE_WORKER_FILES else nodeid

    return LoadKeepingSomeFilesTogether(config, log)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Runs in tests never read or fill the user's cache; one cache per worker process, shared by the tests it
    runs, keeps them fast."""
    cache = tmp_path_factory.getbasetemp() / "occdistill-cache"
    monkeypatch.setenv("OCCDISTILL_CACHE", str(cache))
    monkeypatch.delenv("OCCDISTILL_PLUGINS", raising=False)
    yield


def run_cli(*args, env=None, cwd=None, timeout=300):
    """The installed command as a user runs it, in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "occlusion_distill", *map(str, args)], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


def run_main(*args, cwd=None):
    """The command's entry point (``cli.main``) called in this process, as ``run_cli`` returns it.

    A fresh process spends seconds importing torch and the plugins: more than a refusal of bad input or a
    tiny run takes. ``run_cli`` still covers the installed command itself. Warnings the command raises
    are written to stderr under a fresh process's default filters, as there, not left to pytest's
    summary, so that "one line on stderr" still means one."""
    import contextlib
    import io
    import warnings

    from occlusion_distill.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = [str(a) for a in args]
    before = os.getcwd()
    try:
        os.chdir(cwd or before)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()  # Python's defaults outside __main__
            warnings.simplefilter("default")
            for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", quiet)
            try:
                main(argv)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(before)
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue() + shown)


@pytest.fixture
def broken():
    """``broken(kind, name, obj)`` registers a test's own plugin (origin ``broken-test==0``) for that test
    alone, and returns its name."""
    from occlusion_distill.registry import registry

    added = []

    def add(kind, name, obj):
        registry(kind).add(name, obj, origin="broken-test==0")
        added.append((kind, name))
        return name

    yield add
    for kind, name in added:
        registry(kind).unregister(name)
