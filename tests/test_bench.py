"""The benchmark harness keeps working (figures are recorded by hand in docs/performance.md, never asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


def test_bench_run_writes_the_figures_it_measures(tmp_path: Path):
    out = tmp_path / "out.json"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "memory",
                             "--json", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())
    assert set(figures) >= {"machine", "redis_bytes_per_contact", "redis_bytes_per_contact_in_journey"}
    assert figures["machine"]["mode"] == "quick"
    assert "redis_bytes_per_contact" in result.stdout
