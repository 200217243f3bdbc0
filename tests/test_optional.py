import sys

import pytest

from occlusion_distill.errors import UsageError
from occlusion_distill.optional import require_faiss


def test_faiss_is_imported_lazily():
    import subprocess

    code = ("import sys, occlusion_distill.cli, occlusion_distill.protocol.pipeline; "
            "print('faiss' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip() == "False", res.stderr


def test_help_and_the_console_module_import_no_torch():
    """``occdistill --help`` answers in a fraction of a second: ``report`` needs ``protocol.reporting`` only,
    and the ``protocol`` package loads its training half on first use."""
    import subprocess

    code = ("import sys, runpy; sys.argv = ['occdistill', '--help']\n"
            "try:\n    runpy.run_module('occlusion_distill', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "import occlusion_distill.report\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "Usage: occdistill" in res.stdout and res.stderr.strip().splitlines()[-1] == "False", res.stderr
    import occlusion_distill.protocol as protocol  # every public name still loads, on first use

    assert sorted(protocol.__all__) == sorted(protocol._WHERE)
    assert all(getattr(protocol, name).__module__ == f"occlusion_distill.protocol.{protocol._WHERE[name]}"
               for name in protocol.__all__)


def test_missing_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(UsageError) as err:
        require_faiss()
    assert "occlusion-distill[cpu]" in str(err.value) and "[gpu]" in str(err.value)


def test_installed_faiss_is_returned():
    pytest.importorskip("faiss", reason="the [cpu] extra is not installed")
    assert hasattr(require_faiss(), "IndexFlatL2")
