"""Every run option, declared once, for the pytest plugin and the three CLIs.

As pytest-benchmark's `add_*_options(addoption, prefix)` serve both its plugin
and its own CLI, `add_options(add, prefix, OPTIONS)` registers each option here
with pytest (`--mipro-train-size`) or argparse (`--train-size`): same name
after the prefix, same type, same default, same help. `BenchOptions` reads
them back from either front-end, and `to_pytest_args` turns CLI values into
the plugin's flags by walking the same table, so no flag is translated by hand.
Per-optimizer flags (concurrency knobs, session options such as the Synth
backend, and each seed CLI's own flags: `seed_cli_options`) come from the
optimizers' specs, so no optimizer is named here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipro_bench.argtypes import (
    non_negative_int,
    positive_float,
    positive_int,
    price_per_mtok,
)
from mipro_bench.data import (  # the panel's defaults belong to the data module
    DEFAULT_TEST_SIZE,
    DEFAULT_TRAIN_SIZE,
    DEFAULT_VAL_SIZE,
    ENV_DATA_DIR,
)
from mipro_bench.floors_policy import FLOOR_MODES
from mipro_bench.journal_plan import JournalPlan, JournalPlanError
from mipro_bench.lm import backends as lm_backends
from mipro_bench.lm.settings import DEFAULT_MODEL, token_limits_text
from mipro_bench.option_decl import CLI_PREFIX, PLUGIN_PREFIX, Opt, add_options
from mipro_bench.progress import DEFAULT_INTERVAL_S, PROGRESS_MODES

DEFAULT_RESULTS_DIR = Path("results")


def _data_dir_help() -> str:
    return (f"Banking77 folder (train.csv, test.csv, categories.json); default ${ENV_DATA_DIR}, "
            "else ../shared/banking77 beside the project when present, else the Hugging Face hub")


# Options every entry point has: the panel, the LM, where results go.
COMMON: tuple[Opt, ...] = (
    Opt("data-dir", _data_dir_help(), "data", metavar="DIR"),
    Opt("train-size", "training examples, stratified by intent", "data", positive_int,
        DEFAULT_TRAIN_SIZE),
    Opt("val-size", "validation examples, stratified, disjoint from train", "data",
        positive_int, DEFAULT_VAL_SIZE),
    Opt("test-size", "held-out test examples the suite scores every prompt on", "data",
        positive_int, DEFAULT_TEST_SIZE),
    Opt("data-seed", "seed of the train/val/test panel (separate from optimizer seeds)", "data",
        non_negative_int, 0),
    # The choices are the registered `mipro_bench.lm_backends` entry points.
    Opt("lm", "LM backend; default sim unless OPENAI_API_KEY or --api-base is set (respx: "
        "the simulated LM answered in-process, no LM socket)", "lm",
        choices=lm_backends.names()),
    Opt("api-base", "any OpenAI-compatible server (vLLM, llama.cpp, Ollama)", "lm",
        metavar="URL"),
    Opt("model", f"model for every phase and optimizer (default {DEFAULT_MODEL}; with --lm "
        "local the served model's name is recorded)", "lm", default=DEFAULT_MODEL),
    Opt("max-tokens", "completion-token limit per LM call: N for every kind, or KIND=N,... "
        "with kinds answer, tool_call, proposer, reflection (default answer=256, "
        "tool_call=256, proposer=512, reflection=1024)", "lm", token_limits_text,
        metavar="N|KIND=N,..."),
    Opt("price-in", "USD per million input tokens of an --api-base/--lm local server (with "
        "--price-out; else its cost is unknown)", "lm", price_per_mtok, metavar="USD"),
    Opt("price-out", "USD per million output tokens (with --price-in)", "lm", price_per_mtok,
        metavar="USD"),
    Opt("results-dir", f"where records and reports go (default {DEFAULT_RESULTS_DIR}/)",
        "output", Path, DEFAULT_RESULTS_DIR, metavar="DIR"),
    Opt("progress", "live progress per case and phase (LM calls done/planned, errors, "
        "retries, elapsed, ETA): rich (a live line), lines (one line every "
        "--progress-interval seconds), off; auto (default): rich on a terminal, else lines",
        "output", default="auto", choices=PROGRESS_MODES),
    Opt("progress-interval", "seconds between two progress lines in lines mode (default "
        f"{DEFAULT_INTERVAL_S:g})", "output", positive_float, DEFAULT_INTERVAL_S,
        metavar="S"),
    Opt("resume", "reuse succeeded records of the same cases and replay the journals of "
        "cases that died mid-way (journals in <results-dir>/journal/)", "continuity",
        action="store_true", default=False),
    Opt("record", "save this run's LM traffic as one compressed recording", "continuity",
        metavar="PATH"),
    Opt("replay", "answer every LM call from a recording (no LM, no key, no network)",
        "continuity", metavar="PATH"),
)

# Options of a whole comparison (the plugin and run_comparison.py): the matrix and the gate.
SESSION: tuple[Opt, ...] = (
    Opt("matrix", "the benchmark matrix (default benchmarks/matrix.toml)", "matrix",
        metavar="PATH"),
    Opt("optimizers", "run only these optimizers' cases (comma-separated registered names)",
        "matrix", metavar="A,B"),
    Opt("modes", "override the matrix's modes, e.g. instruction_only", "matrix", metavar="A,B"),
    Opt("seeds", "override the matrix's optimizer seeds, e.g. 1,2,3", "matrix", metavar="1,2"),
    Opt("budget", "override one budget knob of one optimizer, OPTIMIZER.KNOB=N; repeatable",
        "matrix", action="append", metavar="OPT.KEY=N"),
    Opt("option", "override one adapter option, OPTIMIZER.KEY=VALUE; repeatable",
        "matrix", action="append", metavar="OPT.KEY=VALUE"),
    Opt("concurrency", "concurrent LM calls per case for every optimizer (speed only)",
        "scale", positive_int, metavar="N"),
    Opt("floors", "score floors: auto (enforced on the panel they were calibrated on, "
        "reported elsewhere; default), enforce, off", "matrix", default="auto",
        choices=FLOOR_MODES),
    Opt("compare", "gate against an earlier comparison JSON (or the newest in results/)",
        "gate", metavar="PATH|latest"),
    Opt("compare-fail", "fail when METRIC drops by more than N points (or N%%), e.g. "
        "optimized_test_accuracy:5; METRIC:significant[:N] (paired, Holm-corrected); exact "
        "(any change of a simulated run); repeatable", "gate", action="append",
        metavar="METRIC:N[%]"),
    Opt("compare-alpha", "significance level of METRIC:significant (default 0.05)", "gate",
        metavar="ALPHA"),
    Opt("save-baseline", "also save this run's comparison JSON as PATH", "gate",
        metavar="PATH"),
)


# The seed CLIs' one case: its optimizer seed (run_comparison.py and the plugin take a list,
# --seeds, from the matrix).
SEED = Opt("seed", "optimizer seed (default 1, as in benchmarks/matrix.toml)", "lm",
           non_negative_int, 1, metavar="SEED")


def seed_cli_options(optimizer: str) -> tuple[Opt, ...]:
    """A seed CLI's table: the optimizer's own flags (its spec's `seed_cli`), then the
    options every entry point shares, then the seed."""
    from mipro_bench.optimizers import get_spec

    seed_cli = get_spec(optimizer).seed_cli
    if seed_cli is None:
        raise ValueError(f"optimizer {optimizer!r} declares no seed CLI")
    return (*seed_cli.options, *COMMON, SEED)


def spec_options() -> tuple[Opt, ...]:
    """Flags the optimizers declare: each one's concurrency knob and session option."""
    from mipro_bench.optimizers import registry

    out: list[Opt] = []
    for spec in registry().values():
        if spec.concurrency_flag:
            out.append(Opt(spec.concurrency_flag,
                           f"{spec.title}: concurrent LM calls per case (speed only)",
                           "scale", positive_int, metavar="N"))
        if spec.session_option:
            _key, flag, text, choices = spec.session_option
            out.append(Opt(flag, text, "lm", default=choices[0], choices=choices))
    return tuple(out)


def to_pytest_args(values: Callable[[str], Any], options: Iterable[Opt]) -> list[str]:
    """The plugin flags for the CLI values that differ from the defaults."""
    out: list[str] = []
    for opt in options:
        value = values(opt.dest)
        if opt.action == "append":
            out += [f"{PLUGIN_PREFIX}{opt.name}={v}" for v in value or ()]
        elif opt.action == "store_true":
            if value:
                out.append(PLUGIN_PREFIX + opt.name)
        elif value is not None and value != opt.default:
            out += [PLUGIN_PREFIX + opt.name, str(value)]
    return out


def default_data_dir(project_root: Path | None = None) -> Path | None:
    """$BANKING77_DIR, else ../shared/banking77 beside the project when it is there."""
    value = os.environ.get(ENV_DATA_DIR)
    if value:
        return Path(value).expanduser()
    root = project_root or Path(__file__).resolve().parent.parent
    beside = root.parent / "shared" / "banking77"
    return beside if (beside / "train.csv").is_file() else None


@dataclass(frozen=True)
class BenchOptions:
    """What a run was asked for, read from either front-end through the same names."""

    data_dir: Path | None = None
    train_size: int = DEFAULT_TRAIN_SIZE
    val_size: int = DEFAULT_VAL_SIZE
    test_size: int = DEFAULT_TEST_SIZE
    data_seed: int = 0
    lm: str | None = None
    api_base: str | None = None
    model: str = DEFAULT_MODEL
    max_tokens: str | None = None
    price_in: str | None = None
    price_out: str | None = None
    results_dir: Path = DEFAULT_RESULTS_DIR
    resume: bool = False
    record: Path | None = None
    replay: Path | None = None
    progress: str = "auto"
    progress_interval: float = DEFAULT_INTERVAL_S
    # Session options the optimizers declared ({option key: value} per optimizer).
    optimizer_session_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_values(cls, get: Callable[[str], Any]) -> BenchOptions:
        """Read from `get(dest)`: argparse's getattr(args, dest) or pytest's getoption."""
        from mipro_bench.optimizers import registry

        data_dir = get("data_dir")
        session_options: dict[str, dict[str, Any]] = {}
        for spec in registry().values():
            if spec.session_option:
                key, flag, _text, _choices = spec.session_option
                session_options[spec.name] = {key: get(flag.replace("-", "_"))}
        return cls(
            data_dir=Path(data_dir) if data_dir else default_data_dir(),
            train_size=get("train_size"),
            val_size=get("val_size"),
            test_size=get("test_size"),
            data_seed=get("data_seed"),
            lm=get("lm"),
            api_base=get("api_base"),
            model=get("model"),
            max_tokens=get("max_tokens"),
            price_in=get("price_in"),
            price_out=get("price_out"),
            results_dir=Path(get("results_dir")),
            resume=bool(get("resume")),
            record=Path(get("record")) if get("record") else None,
            replay=Path(get("replay")) if get("replay") else None,
            progress=get("progress") or "auto",
            progress_interval=float(get("progress_interval") or DEFAULT_INTERVAL_S),
            optimizer_session_options=session_options,
        )

    @classmethod
    def from_pytest(cls, config: Any) -> BenchOptions:
        return cls.from_values(lambda dest: config.getoption("mipro_" + dest, None))

    def journal_plan(self) -> JournalPlan:
        """The run's resume/record/replay choice (the recording loaded and checked); its
        errors name the options as pytest spells them (--mipro-replay, not --replay)."""
        try:
            return JournalPlan.from_options(resume=self.resume, record=self.record,
                                           replay=self.replay)
        except JournalPlanError as exc:
            raise JournalPlanError(re.sub(r"(?<![\w-])--(resume|record|replay)\b",
                                         PLUGIN_PREFIX + r"\1", str(exc))) from None


def session_values(get: Callable[[str], Any]) -> dict[str, Any]:
    """The matrix and gate options' values by dest (both front-ends)."""
    return {opt.dest: get(opt.dest) for opt in (*SESSION, *spec_options())}


def names_of(options: Sequence[Opt]) -> list[str]:
    return [opt.name for opt in options]


# The declaration's pieces, re-exported: every front-end imports its table and these together.
__all__ = ["CLI_PREFIX", "COMMON", "PLUGIN_PREFIX", "SEED", "SESSION", "BenchOptions", "Opt",
           "add_options", "default_data_dir", "names_of", "seed_cli_options", "session_values",
           "spec_options", "to_pytest_args"]
