"""Run every benchmark, print a table, optionally write the figures as JSON.

    python bench/run.py                    # full run (about 15 minutes on 2 cores)
    python bench/run.py --quick            # smaller counts, under 3 minutes
    python bench/run.py --quick --json out.json
    python bench/run.py --only throughput timers
    python bench/run.py --only ingest      # HTTP ingest and import (wrk: apt-get install wrk)
    python bench/run.py --only forecast    # lifecycle forecast of 100,000 contacts over 30 days
    python bench/run.py --only plan        # `lifecycle plan` over 100,000 waiting contacts
    python bench/run.py --only stepcost    # CPU per step in one process (steady where rates are not)

Redis: the server at REDIS_URL if set, else a fresh embedded redis-server. The
benchmarks reset Redis's command counters (CONFIG RESETSTAT) and read its memory
use, so on a shared server the transition and memory figures include other traffic.
See docs/performance.md for what each figure means and the recorded results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

try:
    import dramatiq  # noqa: F401
    import redis  # noqa: F401
except ImportError:
    # Started by a Python without the project installed: use the README's virtual environment.
    venv_python = ROOT / ".venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if venv_python.exists() and Path(sys.executable).resolve() != venv_python.resolve():
        os.execv(str(venv_python), [str(venv_python), *sys.argv])
    sys.exit("The project is not installed: run `python3 dev.py test` (or `python3 dev.py demo`) once first.")

from bench import (  # noqa: E402
    chaos, forecast, guardrails, ingest, memory, plan, population, stepcost, throughput, timers, transitions,
)
from bench.harness import Bench, bench_redis  # noqa: E402

BENCHMARKS = {
    "throughput": throughput.run,
    "stepcost": stepcost.run,
    "timers": timers.run,
    "transitions": transitions.run,
    "population": population.run,
    "memory": memory.run,
    "chaos": chaos.run,
    "guardrails": guardrails.run,
    "ingest": ingest.run,
    "forecast": forecast.run,
    "plan": plan.run,
}

TARGETS = {
    "throughput_ratio": (">=", 2.0),
    "timer_p99_lateness_s": ("<=", 1.0),
    "redis_bytes_per_timer": ("<=", 200),
    "worker_rss_growth_mb": ("<=", 50),
    "transition_cost_spread": ("<=", 0.2),
    "population_step_seconds": ("<=", 600),
    "redis_bytes_per_contact": ("<=", 1024),
    "chaos_lost": ("<=", 0),
    "chaos_unknown_left": ("<=", 0),
    "chaos_recovery_max_s": ("<=", 30),
    "chaos_scheduler_delay_max_s": ("<=", 10),
    "chaos_redis_resume_s": ("<=", 10),
    "optout_late_sends": ("<=", 0),
    "guardrails_cost_ratio": (">=", 0.90),
    "http_track_req_per_s": (">=", 3000),
    "http_batch_events_per_s": (">=", 20000),
    "http_p99_ms_at_1000_rps": ("<=", 25),
    "import_events_per_s": (">=", 30000),
    "forecast_seconds_100k": ("<=", 60),
    "plan_seconds_100k": ("<=", 10),
}


def machine(redis_description: str) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": memory_gb, "python": platform.python_version(),
            "os": platform.platform(), "redis": redis_description, "commit": commit}


def verdict(key: str, value: object) -> str:
    if key not in TARGETS or not isinstance(value, (int, float)):
        return ""
    op, target = TARGETS[key]
    ok = value >= target if op == ">=" else value <= target
    return f"{'met' if ok else 'NOT MET'} ({op} {target})"


def table(results: dict) -> str:
    lines = [f"{'figure':<48} {'value':>14}  target"]
    for key, value in results.items():
        if key == "machine":
            continue
        shown = json.dumps(value) if isinstance(value, (dict, list)) else ("null" if value is None else f"{value:,}")
        lines.append(f"{key:<48} {shown:>14}  {verdict(key, value)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts, under 3 minutes on 2 cores")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--processes", type=int, default=2, help="worker processes, for both systems (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process (default 8)")
    args = parser.parse_args(argv)
    results: dict = {}
    started = time.perf_counter()
    with bench_redis() as (url, description), tempfile.TemporaryDirectory(prefix="lifecycle-bench-") as workdir:
        bench = Bench(url, args.quick, args.processes, args.threads, Path(workdir))
        results["machine"] = {**machine(description), "mode": "quick" if args.quick else "full",
                              "workers": f"{args.processes} processes x {args.threads} threads"}
        print(" ".join(f"{k}={v}" for k, v in results["machine"].items()), flush=True)
        for name in args.only or list(BENCHMARKS):
            print(f"running {name} ...", flush=True)
            step_started = time.perf_counter()
            results.update(BENCHMARKS[name](bench))
            print(f"  {name} took {time.perf_counter() - step_started:.0f}s", flush=True)
        if bench.notes:
            results["notes"] = bench.notes
    results["machine"]["seconds"] = round(time.perf_counter() - started, 1)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
