import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
