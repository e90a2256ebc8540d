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
"""

from __future__ import annotations

import os
import sys

from mipro_bench.argtypes import port_number
from mipro_bench.cli import (
    OneLineParser,
    add_common_arguments,
    guarded,
    non_negative_int,
    positive_int,
    run_optimizer,
    stderr_console,
)
from mipro_bench.lm.settings import load_dotenv
from mipro_bench.optimizers.synth_mipro import DEFAULT_ROLLOUTS

PROG = "run_synth_mipro_banking77.py"
EARLIER_TASK_APP_PORT = 8015


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    synth = parser.add_argument_group("Synth MIPRO")
    synth.add_argument("--rollouts", type=positive_int, default=DEFAULT_ROLLOUTS,
                       help=f"rollout budget: task-app rollouts the job may run "
                            f"(default {DEFAULT_ROLLOUTS}); proposals are LM calls, not rollouts")
    synth.add_argument("--mode", choices=("offline", "online"), default="offline",
                       help="offline: the backend runs the rollouts through the task app; "
                            "online: this process serves the traffic through the job's proxy "
                            "and reports rewards (default offline)")
    synth.add_argument("--local", action="store_true",
                       help="use the local Synth-compatible backend even when SYNTH_API_KEY "
                            "is set")
    synth.add_argument("--backend-url", default=None,
                       help="a Synth backend URL (default: SYNTH_BACKEND_URL or "
                            "https://api.usesynth.ai when hosted; with --local, an external "
                            "local backend instead of the in-process one)")
    synth.add_argument("--num-candidates", type=non_negative_int, default=None,
                       help="instructions the meta model proposes (default 6)")
    synth.add_argument("--minibatch-size", type=positive_int, default=None,
                       help="train seeds per search trial (default 10)")
    synth.add_argument("--task-app-port", type=port_number, default=EARLIER_TASK_APP_PORT,
                       help=f"task app port, or the next free one (default "
                            f"{EARLIER_TASK_APP_PORT}; 0 = any)")
    add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    load_dotenv()
    hosted = bool(os.environ.get("SYNTH_API_KEY")) and not args.local
    if not hosted:
        why = "--local" if args.local else "no SYNTH_API_KEY"
        where = f"at {args.backend_url}" if args.backend_url else "in-process on 127.0.0.1"
        stderr_console().print(
            f"Synth: local Synth-compatible backend {where} ({why}); the record says "
            "backend=local", highlight=False, soft_wrap=True)
    budget = {k: v for k, v in {"rollouts": args.rollouts, "num_candidates": args.num_candidates,
                                "minibatch_size": args.minibatch_size}.items() if v is not None}
    options = {
        "backend": "hosted" if hosted else "local",
        "backend_url": args.backend_url,
        "mipro_mode": args.mode,
        "task_app_port": args.task_app_port,
    }
    return guarded(
        lambda: run_optimizer("synth_mipro", args, mode="instruction_only", budget=budget,
                              options=options),
        PROG,
    )


if __name__ == "__main__":
    sys.exit(main())
