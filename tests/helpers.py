"""Helpers shared by the tests: running the CLI as a user would, reading outputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds


def _drop_dac_prefix() -> list[str]:
    """As root, drop the capabilities that bypass file permissions, so chmod 000 files are really unreadable."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return []
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def permissions_enforced() -> bool:
    return os.geteuid() != 0 or shutil.which("setpriv") is not None


def run_cli(*args, env=None, check=True, drop_dac=True, timeout=600, input=None):
    """Run ``python -m gcage_fast ARGS`` in a subprocess (as a user would), returning CompletedProcess."""
    cmd = (_drop_dac_prefix() if drop_dac else []) + [sys.executable, "-m", "gcage_fast", *map(str, args)]
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"gcage-fast {' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc



def read_rows(out_dir, columns=None):
    """All rows of a scan output as a list of dicts (pyarrow.dataset over results/)."""
    return ds.dataset(Path(out_dir) / "results", format="parquet").to_table(columns=columns).to_pylist()


def pool_double(x: int) -> int:
    """A worker function for pool tests (workers import it from here): -1 aborts, -2 hangs."""
    if x == -1:
        os.abort()
    if x == -2:
        import time

        time.sleep(60)
    return 2 * x


def pool_failure_code(task, failure) -> str:
    return failure.code
