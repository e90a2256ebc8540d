#!/usr/bin/env python3
"""DSPy MIPROv2 on Banking77: the earlier script's command line, now doing what it says.

    python run_dspy_mipro_banking77.py --trials 5 --train-size 5 --val-size 3

`--trials N` runs exactly N MIPROv2 search trials (the earlier script logged it
and ignored it); `--auto light|medium|heavy` uses a DSPy preset instead. With
no OPENAI_API_KEY and no --api-base the LM is the simulated one (offline),
and every number says so. The record goes to
results/banking77_dspy_mipro_YYYYMMDD_HHMMSS.json, the optimized program
next to it. Exit 0 ok, 1 the run failed (record written), 2 bad usage.

The session engine of `pytest benchmarks/` and run_comparison.py with one DSPy
MIPROv2 case; its flags are declared in mipro_bench/optimizers/dspy_mipro.py
(SEED_OPTIONS) and mipro_bench/options.py.
"""

from __future__ import annotations

import sys

from mipro_bench import cli
from mipro_bench.argtypes import OneLineParser

PROG = "run_dspy_mipro_banking77.py"
OPTIMIZER = "dspy_miprov2"
DESCRIPTION = __doc__.split("\n\n")[0]


def build_parser() -> OneLineParser:
    return cli.build_parser(OPTIMIZER, PROG, DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    return cli.main(OPTIMIZER, PROG, DESCRIPTION, argv)


if __name__ == "__main__":
    sys.exit(main())
