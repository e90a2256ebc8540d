"""`python -m task_app` / `mipro-task-app`: serve the Banking77 task app on its own.

The earlier benchmark served its task app on port 8015, so that stays the
default. The panel is drawn exactly as the suite draws it (same sizes, same
data seed, same stratified splits), so seeds sent to this server address the
same examples a `pytest benchmarks/` run would. Rollouts that name no
inference_url go to an in-process LM gateway (simulated by default, else
forwarding to --lm/--api-base), so a bare server answers out of the box and
its LM calls are counted like every other call of the suite.

Bad options and unusable data end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

import uvicorn

from mipro_bench.argtypes import OneLineParser, port_number, positive_int
from mipro_bench.data import (
    DEFAULT_TEST_SIZE,
    DEFAULT_TRAIN_SIZE,
    DEFAULT_VAL_SIZE,
    ENV_DATA_DIR,
    DataError,
    load_banking77,
    make_splits,
)
from mipro_bench.lm.backends import resolve_lm_settings
from mipro_bench.lm.settings import DEFAULT_MODEL, LMConfigError, LMSettings
from mipro_bench.serving import ServerStartError, bind_socket, url_for
from task_app.app import build_task_app
from task_app.policy import PolicyDefaults
from task_app.server import DEFAULT_PORT

PROG = "mipro-task-app"
ENV_KEY = "ENVIRONMENT_API_KEY"
GATEWAY_SCOPE = ("task_app", "rollout")  # where default-LM rollouts are counted


class CliError(Exception):
    """A problem the user can fix, reported as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Serve the Banking77 task app (synth-ai LocalAPI "
                     "contract). Clients authenticate with ENVIRONMENT_API_KEY.")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}; 0 = any free port)")
    parser.add_argument("--data-dir", default=None,
                        help=f"Banking77 folder with train.csv, test.csv, categories.json "
                             f"(default ${ENV_DATA_DIR}, else the Hugging Face hub)")
    parser.add_argument("--train-size", type=positive_int, default=DEFAULT_TRAIN_SIZE)
    parser.add_argument("--val-size", type=positive_int, default=DEFAULT_VAL_SIZE)
    parser.add_argument("--test-size", type=positive_int, default=DEFAULT_TEST_SIZE)
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the splits")
    parser.add_argument("--lm", choices=("sim", "openai", "local"), default=None,
                        help="LM for rollouts that name no inference_url (default sim unless "
                             "OPENAI_API_KEY or --api-base)")
    parser.add_argument("--api-base", default=None,
                        help="an OpenAI-compatible server for those rollouts")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"model for those rollouts (default {DEFAULT_MODEL})")
    parser.add_argument("--log-level", default="warning",
                        choices=("critical", "error", "warning", "info", "debug"))
    return parser


def _env_api_key() -> str:
    key = (os.environ.get(ENV_KEY) or "").strip()
    if key:
        return key
    from synth_ai.sdk.localapi.auth import mint_environment_api_key

    key = mint_environment_api_key()
    print(f"{ENV_KEY} is not set; this run's key is {key} (export it for clients)",
          file=sys.stderr)
    return key


@contextlib.contextmanager
def _default_lm(settings: LMSettings, log_level: str) -> Iterator[PolicyDefaults]:
    from mipro_bench.lm.gateway import start_gateway

    with contextlib.ExitStack() as stack:
        try:
            gateway = stack.enter_context(start_gateway(settings, log_level=log_level))
        except (ServerStartError, RuntimeError, ValueError) as exc:  # no policy, no upstream
            raise CliError(f"cannot start the LM gateway: {exc}") from None
        yield PolicyDefaults(
            inference_url=gateway.endpoint.base_url(*GATEWAY_SCOPE),
            model=settings.model,
            api_key=gateway.endpoint.api_key,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
        )


def serve(args: argparse.Namespace) -> None:
    if not args.host.strip():
        raise CliError("--host must not be empty")
    try:
        data = load_banking77(args.data_dir)
        splits = make_splits(data, train_size=args.train_size, val_size=args.val_size,
                             test_size=args.test_size, seed=args.data_seed)
        settings, lm_line = resolve_lm_settings(lm=args.lm, api_base=args.api_base,
                                                model=args.model)
    except (DataError, LMConfigError) as exc:
        raise CliError(str(exc)) from None
    key = _env_api_key()
    try:
        sock = bind_socket(args.host, args.port)
    except ServerStartError as exc:
        raise CliError(f"{exc} (pick another --port, or 0 for any free port)") from None
    port = int(sock.getsockname()[1])
    with sock, _default_lm(settings, args.log_level) as defaults:
        app = build_task_app(splits, env_api_key=key, default_policy=defaults)
        print(lm_line, file=sys.stderr)
        print(f"Banking77 task app on {url_for(args.host, port)} (train {len(splits.train)}, "
              f"val {len(splits.val)}, test {len(splits.test)}; data seed {splits.seed}; "
              f"source {splits.source})", file=sys.stderr)
        config = uvicorn.Config(app, log_level=args.log_level, lifespan="on")
        uvicorn.Server(config).run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        serve(args)
    except (CliError, ServerStartError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
