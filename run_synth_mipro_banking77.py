#!/usr/bin/env python3
"""Synth MIPRO on Banking77: the earlier script's command line, through the synth-ai SDK.

    python run_synth_mipro_banking77.py --rollouts 3 --train-size 5 --val-size 3

The task app is served on localhost (port 8015 or the next free one) and the
real synth-ai 0.7.3 job client submits and polls a MIPRO job: on Synth's
hosted backend when SYNTH_API_KEY is set (behind a Cloudflare tunnel), else
(or with --local) on the local Synth-compatible backend, which says so in one
line and labels the record backend=local. With no OPENAI_API_KEY and no
--api-base the LM is the simulated one (offline). The baseline and the
optimized instruction are both scored on the held-out test split through the
task app. The record goes to results/banking77_synth_mipro_YYYYMMDD_HHMMSS.json.
Exit 0 ok, 1 the run failed (record written), 2 bad usage or a refusal, e.g. Synth's
hosted service refusing synth-ai 0.7.3's route or tunnel (one line; record written).

The session engine of `pytest benchmarks/` and run_comparison.py with one Synth
MIPRO case; its flags are declared in mipro_bench/optimizers/synth_mipro.py
(SEED_OPTIONS) and mipro_bench/options.py.
"""

from __future__ import annotations

import sys

from mipro_bench import cli
from mipro_bench.argtypes import OneLineParser

PROG = "run_synth_mipro_banking77.py"
OPTIMIZER = "synth_mipro"
DESCRIPTION = __doc__.split("\n\n")[0]


def build_parser() -> OneLineParser:
    return cli.build_parser(OPTIMIZER, PROG, DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    return cli.main(OPTIMIZER, PROG, DESCRIPTION, argv)


if __name__ == "__main__":
    sys.exit(main())
