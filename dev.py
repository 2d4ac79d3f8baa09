#!/usr/bin/env python3
"""Set-up-and-run entry point: the README's two commands.

    python3 dev.py demo    # create .venv, install, run `lifecycle demo`
    python3 dev.py test    # create .venv, install with test extras, run pytest

Only the standard library is used here, so it works on a fresh machine with just
Python 3.11+. The virtual environment is (re)installed whenever pyproject.toml
changes; a stamp file records the hash of what was installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".installed"


def _venv_python() -> Path:
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def _ensure_venv() -> Path:
    if sys.version_info < (3, 11):
        sys.exit(f"Python 3.11 or newer is required (this is {sys.version.split()[0]}).")
    python = _venv_python()
    if not python.exists():
        print(f"Creating virtual environment in {VENV} ...", flush=True)
        try:
            venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        except subprocess.CalledProcessError:
            sys.exit("Could not create a virtual environment with pip. On Debian or Ubuntu install it with "
                     "`sudo apt install python3-venv`, then run this command again.")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text().strip() != wanted:
        print("Installing lifecycle and its dependencies ...", flush=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-e", f"{ROOT}[test]"],
            check=True,
        )
        STAMP.write_text(wanted)
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test"}:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    python = _ensure_venv()
    os.chdir(ROOT)
    if command == "demo":
        args = [str(python), "-m", "automation", "demo", *rest]
    else:
        # One test process per core (at most 4): most tests wait on Redis, worker
        # processes or sockets, so the suite takes about half as long. `-n 0` runs it in one process.
        parallel = [] if any(arg == "-n" or arg.startswith(("-n", "--numprocesses")) for arg in rest) \
            else ["-n", str(min(4, os.cpu_count() or 1))]
        args = [str(python), "-m", "pytest", *parallel, *rest]
    return subprocess.call(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
