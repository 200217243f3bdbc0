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


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Runs in tests never read or fill the user's cache; one cache per test session keeps them fast."""
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
