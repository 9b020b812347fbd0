"""What the README's set-up costs: install time and size of a fresh virtual environment, and the test count.

Creates a virtual environment in a temporary directory with an empty pip cache, installs exactly what
``make install`` installs (torch pinned by constraints.txt, then ``-e '.[cpu,dev,triton]'``), and measures wall
time and the environment's size on disk; then counts the tests ``make test`` collects. Writes
``benchmarks/results/setup-cost.json`` with the sha256 of the files that decide the install (pyproject.toml,
constraints.txt), so ``tests/test_docs.py`` can tell when the README's numbers have gone stale (it also counts
the tests itself and wants the recorded count within 5%).

    .venv/bin/python benchmarks/setup_cost.py            # about 2 minutes on 2 cores
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "benchmarks" / "results" / "setup-cost.json"


def inputs_digest(root: Path = ROOT) -> dict[str, str]:
    """sha256 of the files that decide what the install downloads."""
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest()
            for name in ("pyproject.toml", "constraints.txt")}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure() -> dict:
    with tempfile.TemporaryDirectory(prefix="gcage-setup-") as tmp:
        venv, cache = Path(tmp) / "venv", Path(tmp) / "pip-cache"
        env = dict(os.environ, PIP_CACHE_DIR=str(cache), PIP_DISABLE_PIP_VERSION_CHECK="1")
        pip = [str(venv / "bin" / "pip"), "install", "-q", "-c", str(ROOT / "constraints.txt")]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(pip + ["torch==2.13.0"], check=True, env=env, cwd=ROOT)
        subprocess.run(pip + ["-e", ".[cpu,dev,triton]"], check=True, env=env, cwd=ROOT)
        install_s = time.perf_counter() - t0
        size = _size(venv)
    collected = subprocess.run([str(ROOT / ".venv" / "bin" / "pytest"), "--collect-only", "-q"], cwd=ROOT,
                               capture_output=True, text=True).stdout
    m = re.search(r"(\d+) tests? collected", collected)
    return {"install_s": round(install_s, 1), "venv_bytes": size, "venv_gb": round(size / 1e9, 1),
            "tests": int(m.group(1)) if m else None, "cpu": _cpu(), "cores": os.cpu_count(),
            "python": platform.python_version(), "measured_at": time.strftime("%Y-%m-%d"),
            "inputs": inputs_digest()}


if __name__ == "__main__":
    result = measure()
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps({k: v for k, v in result.items() if k != "inputs"}) + "\n")
