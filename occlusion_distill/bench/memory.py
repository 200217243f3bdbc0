"""Peak memory of a training run: ``occdistill run`` in a child process, its peak resident set size.

The child is a fresh interpreter, so the figure is what a user's run needs (libraries, models, data,
loader), not what this process already holds.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import RunFailed


def run(run_args: list[str], reporter: Any = None) -> dict[str, Any]:
    """Train once with ``occdistill run RUN_ARGS`` and return its peak RSS and wall time."""
    with tempfile.TemporaryDirectory(prefix="occdistill-memory-") as tmp:
        cmd = [sys.executable, "-m", "occlusion_distill", "run", *run_args, "--quiet", "--no-cache",
               "--out", str(Path(tmp) / "run")]
        t0 = time.perf_counter()
        with open(Path(tmp) / "stderr.txt", "w+") as log:  # a file, not a pipe: a chatty run cannot block
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - t0
            log.seek(0)
            err = log.read()
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            last = err.strip().splitlines()[-1] if err.strip() else f"exit code {code}"
            raise RunFailed(f"the measured run failed: {last}")
    peak_kib = usage.ru_maxrss  # Linux reports KiB
    if platform.system() == "Darwin":
        peak_kib //= 1024
    return {"command": "occdistill run " + " ".join(run_args), "peak_rss_mib": round(peak_kib / 1024, 1),
            "seconds": round(seconds, 1), "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count()}
