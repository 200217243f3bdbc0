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


def test_missing_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(UsageError) as err:
        require_faiss()
    assert "occlusion-distill[cpu]" in str(err.value) and "[gpu]" in str(err.value)


def test_installed_faiss_is_returned():
    pytest.importorskip("faiss", reason="the [cpu] extra is not installed")
    assert hasattr(require_faiss(), "IndexFlatL2")
