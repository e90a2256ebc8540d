#!/usr/bin/env python3
"""The quick start: `python dev.py bench` (offline comparison) and `python dev.py test`.

Needs only Python 3.11+ and pip: it creates `.venv` beside this file, installs
the project into it (again only when pyproject.toml changed), and runs the job
inside it. CI runs `python dev.py test` too, so the README's command is the one
that is tested.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("MIPRO_BENCH_VENV", ROOT / ".venv"))
STAMP = VENV / ".mipro-bench-installed"
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "banking77"
PYTEST_NO_TESTS = 5


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_installed() -> None:
    """Create the venv and install `.[dev]`, skipping the install when nothing changed."""
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text().strip() == wanted and venv_python().exists():
        return
    if not venv_python().exists():
        print(f"dev.py: creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("dev.py: installing mipro-bench and its dependencies (first time: ~2-3 min)", flush=True)
    subprocess.run(
        [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q",
         "-e", f"{ROOT}[dev]"],
        check=True,
    )
    STAMP.write_text(wanted)


def data_env() -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("BANKING77_DIR") and (DEFAULT_DATA_DIR / "train.csv").is_file():
        env["BANKING77_DIR"] = str(DEFAULT_DATA_DIR)
    return env


def run_tests(extra: list[str]) -> int:
    code = subprocess.call([str(venv_python()), "-m", "pytest", *extra], cwd=ROOT, env=data_env())
    if code == PYTEST_NO_TESTS:
        print("dev.py: pytest collected no tests; that is a failure here", file=sys.stderr)
        return 1
    return code


def run_bench(extra: list[str]) -> int:
    script = ROOT / "run_comparison.py"
    return subprocess.call([str(venv_python()), str(script), "--all", *extra], cwd=ROOT,
                           env=data_env())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Arguments after the job go to run_comparison.py (bench) or pytest (test).",
    )
    parser.add_argument("job", choices=("bench", "test", "install"))
    # Only the job is ours: everything after it (including "--") belongs to the tool it runs.
    args = parser.parse_args(sys.argv[1:2])
    extra = sys.argv[2:]
    try:
        ensure_installed()
    except subprocess.CalledProcessError as exc:
        print(f"dev.py: installing failed (exit {exc.returncode}); see pip's output above",
              file=sys.stderr)
        return 1
    if args.job == "install":
        return 0
    return run_tests(extra) if args.job == "test" else run_bench(extra)


if __name__ == "__main__":
    sys.exit(main())
