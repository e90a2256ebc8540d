"""The session engine: how every entry point wires a run, written once.

`pytest benchmarks/` (the plugin's fixtures are thin views of one `Engine`),
`run_comparison.py` (which runs that pytest session in-process) and the seed
CLIs (`mipro_bench/cli.py`: the engine with one case of one optimizer) all run
through this class, so they cannot drift apart in how a run is wired:

1. the journal plan (--resume / --record / --replay), checked before it is handed in;
2. the LM resolved from the options, a replay naming the recorded one (`lm`);
3. the panel loaded and split once (`splits`);
4. one LM gateway, started on first use and journaling as the plan says (`gateway`);
5. the session's servers, started on first use, on the gateway's in-process network
   under `--lm respx` (`servers`);
6. each case reused on `--resume` when a finished record has its key, else run under
   its own gateway scope (`run_case`);
7. `--record`'s recording saved from the records' scopes (`save_recording`; the pytest
   session saves from every worker's records, through the same `JournalPlan` call).

Front-ends decide only what is theirs: how a line reaches the user, how an error
ends the run (pytest's exit 4, a CLI's exit 2), and what is printed at the end.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from mipro_bench.data import Banking77, Splits, load_banking77, make_splits
from mipro_bench.journal_plan import JournalPlan
from mipro_bench.lm.gateway import GatewayHandle
from mipro_bench.lm.run_lm import resolve, run_lm
from mipro_bench.lm.settings import LMSettings
from mipro_bench.optimizers import get_spec
from mipro_bench.optimizers.base import OptimizeRequest
from mipro_bench.options import BenchOptions
from mipro_bench.results import RunRecord
from mipro_bench.resume import Reuse, case_key, case_scope, find_reusable, key_hash
from mipro_bench.runner import run_case
from mipro_bench.session_servers import SessionServers


@dataclass(frozen=True)
class LMChoice:
    """The LM a run talks to, and the one line that tells the user so."""

    settings: LMSettings
    line: str


def choose_lm(options: BenchOptions, plan: JournalPlan) -> LMChoice:
    """`--lm`/`--api-base`/`--model` resolved; a replay talks to no LM and names the
    recorded one instead."""
    settings, line = resolve(options.lm, options.api_base, options.model,
                             max_tokens=options.max_tokens, price_in=options.price_in,
                             price_out=options.price_out)
    if plan.replay is not None:
        settings = plan.lm_settings(settings)
        line = (f"LM: REPLAYED from {plan.replay} (recorded {settings.model}, "
                f"{'simulated' if settings.simulated else settings.backend}); no LM is called")
    return LMChoice(settings, line)


class Engine:
    """One run's LM, panel, servers and cases; pieces start on first use, close together."""

    def __init__(self, options: BenchOptions, plan: JournalPlan, *,
                 say: Callable[[str], None], env_api_key: str | None = None) -> None:
        self.options = options
        self.plan = plan
        self.say = say  # lines from starting the LM ("local model: ...")
        self.env_api_key = env_api_key
        self._stack = contextlib.ExitStack()
        self._lock = threading.RLock()
        self._gateway: GatewayHandle | None = None
        self._servers: SessionServers | None = None

    @cached_property
    def lm(self) -> LMChoice:
        return choose_lm(self.options, self.plan)

    @cached_property
    def data(self) -> Banking77:
        return load_banking77(self.options.data_dir)

    @cached_property
    def splits(self) -> Splits:
        o = self.options
        return make_splits(self.data, train_size=o.train_size, val_size=o.val_size,
                           test_size=o.test_size, seed=o.data_seed)

    def gateway(self) -> GatewayHandle:
        """The run's one LM gateway (and the llama.cpp server `--lm local` needs)."""
        with self._lock:
            if self._gateway is None:
                self._gateway = self._stack.enter_context(run_lm(
                    self.lm.settings, say=self.say,
                    **self.plan.gateway_kwargs(self.options.results_dir)))
            return self._gateway

    def servers(self, splits: Splits | None = None) -> SessionServers:
        """The session's shared servers over `splits` (default: the run's panel)."""
        with self._lock:
            if self._servers is None:
                network = (self.gateway().network
                           if self.lm.settings.transport == "respx" else None)
                self._servers = self._stack.enter_context(SessionServers(
                    splits or self.splits, env_api_key=self.env_api_key, network=network))
            return self._servers

    def run_case(self, *, optimizer: str, mode: str, seed: int, budget: Any,
                 options: Mapping[str, Any], label: str, workdir: Path,
                 splits: Splits | None = None, progress: Callable[[str], None] | None = None,
                 say: Callable[[str], None] | None = None,
                 watch: Any = None) -> tuple[RunRecord, Path]:
        """One case under its key: the reused record on `--resume` when one fits, else a
        run under the case's own scope (so its journal is found again)."""
        spec = get_spec(optimizer)
        splits = splits or self.splits
        endpoint = self.gateway().endpoint
        results_dir = self.options.results_dir
        key = case_key(optimizer=spec.name, mode=mode, seed=seed, budget=budget.to_dict(),
                       options=options, speed_only=spec.concurrency_options,
                       digests=splits.digests(), settings=endpoint.settings)
        reuse = (find_reusable(results_dir, key, label) if self.plan.resume
                 else Reuse(None, None))
        if reuse.note and say is not None:
            say(reuse.note)
        if reuse.record is not None:
            path = Path(results_dir) / reuse.record.details["reused_from"]
            if say is not None:
                say(f"resume: {label}: reusing {path.name} (not run again)")
            return reuse.record, path
        request = OptimizeRequest(
            splits=splits, lm=endpoint, mode=mode, budget=budget,  # type: ignore[arg-type]
            seed=seed, workdir=workdir, scope=case_scope(spec.slug, mode, seed, key),
            progress=progress, options=dict(options), harness=self.servers(splits))
        return run_case(spec.create(dict(options)), request, results_dir=results_dir,
                        details={"case_key": key, "case_key_hash": key_hash(key)},
                        watch=watch)

    def save_recording(self, records: Iterable[RunRecord]) -> Path | None:
        """`--record PATH` from these records' scopes (None when not recording)."""
        return self.plan.save_recording(self.options.results_dir, records)

    def close(self) -> None:
        with self._lock:
            self._servers = self._gateway = None
            self._stack.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
