"""The tests run the build that production runs: the per-event modules compiled by mypyc."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

from consumer import compiled_modules

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_listed_in_setup_runs_compiled() -> None:
    listed = runpy.run_path(str(ROOT / "setup.py"), run_name="setup")["COMPILED"]
    expected = sorted(path.removesuffix(".py").replace("/", ".") for path in listed)
    # LEADS_PURE_PYTHON=1 builds no extension (setup.py): then nothing may run compiled either.
    assert compiled_modules() == ([] if os.environ.get("LEADS_PURE_PYTHON") == "1" else expected)
