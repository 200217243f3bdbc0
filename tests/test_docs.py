"""The documentation site builds with no warning, and its examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import ROOT
from test_registry import make_distribution

DOCS = ROOT / "docs"


def test_site_builds_strict_with_a_generated_cli_reference(tmp_path):
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "WARNING" not in res.stderr, res.stderr
    cli_page = (tmp_path / "site" / "cli" / "index.html").read_text()
    from occlusion_distill.cli import cli

    for name in cli.commands:  # every command is in the reference, with its options
        assert f"occdistill {name}" in cli_page
    assert "--min-speed" in cli_page and "--occlusion-arg" in cli_page
    for page in ("writing-a-plugin", "concepts", "quickstart", "api", "reproducing-the-paper"):
        assert (tmp_path / "site" / page / "index.html").is_file()


def test_every_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages == set(re.findall(r"^  - [^:]+: (\S+\.md)$", nav, re.M))


def test_python_api_page_runs_as_written(tmp_path):
    code = "\n\n".join(re.findall(r"```python\n(.*?)```", (DOCS / "api.md").read_text(), re.S))
    assert code.count("\n") > 40
    script = tmp_path / "api_page.py"
    script.write_text(code)
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "('speed against CoarseDropout', '" in res.stdout  # (pass or not: speed is a benchmark matter)


def test_the_plugin_written_on_the_plugin_page_installs_checks_and_runs(tmp_path, cli):
    tomllib = pytest.importorskip("tomllib")
    page = (DOCS / "writing-a-plugin.md").read_text()
    files = dict(re.findall(r"`occdistill-eyepatch/([\w.]+)`:\n\n```\w+\n(.*?)```", page, re.S))
    assert set(files) == {"pyproject.toml", "occdistill_eyepatch.py"}
    assert len(files["occdistill_eyepatch.py"].strip().splitlines()) <= 32  # "an occlusion in 30 lines"
    project = tomllib.loads(files["pyproject.toml"])
    eps = project["project"]["entry-points"]
    make_distribution(tmp_path, project["project"]["name"], "occdistill_eyepatch", files["occdistill_eyepatch.py"], eps)
    env = {"PYTHONPATH": str(tmp_path) + ":" + ":".join(sys.path), "COLUMNS": "200"}

    listed = cli("list", "occlusions", env=env)
    assert "eyepatch" in listed.stdout and "occdistill-eyepatch==1.2.3" in listed.stdout
    checked = cli("check-plugin", "eyepatch", "--quiet", "--min-speed", "0.02", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # the page quotes the coverage line the check prints
    coverage = re.search(r"coverage of each face region\s*│\s*pass\s*│\s*(.*?hidden)", checked.stdout).group(1)
    assert coverage in page
    run = cli("run", "--occlusion", "eyepatch", "--occlusion-arg", "size=0.6", "--preset", "smoke", "--epochs", "1",
              "--quiet", "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache", env=env)
    assert run.returncode == 0, run.stderr
    bad = cli("check-plugin", "eyepatch", "--option", "size=3", env=env)
    assert bad.returncode == 2 and "eyepatch: size must be in [0.1, 1]" in bad.stderr
