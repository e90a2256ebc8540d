"""The versioned, frozen result record of one benchmark case, and its JSON.

Every writer (CLIs, benchmark cases) and every reader (plugin, report, gate)
goes through `RunRecord.to_dict` / `RunRecord.from_dict`, so a field cannot be
written under one name and read under another. Test accuracy and an
optimizer's self-reported best score are different fields on purpose: the
earlier benchmark compared one with the other.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

SCHEMA_VERSION = 1

Status = Literal["succeeded", "failed"]
Mode = Literal["instruction_only", "fewshot"]
MODES: tuple[Mode, ...] = ("instruction_only", "fewshot")
PHASES = ("baseline_eval", "optimize", "test_eval")


class RecordError(ValueError):
    """A result file that is not a record this version can read."""


@dataclass(frozen=True)
class ItemResult:
    """One test item's outcome: what paired statistics are computed from."""

    id: str
    expected: str
    predicted: str | None
    correct: bool
    # Why the item has no answer when the LM call itself failed (it is scored wrong and
    # counted); None for every answered item, including unparseable answers.
    error: str | None = None


@dataclass(frozen=True)
class Demo:
    query: str
    intent: str
    # A ChainOfThought demo's rationale, so a program rebuilt from the record formats its
    # demos exactly as the compiled one did (None for Predict demos; left out of the JSON).
    reasoning: str | None = None


@dataclass(frozen=True)
class OptimizedPrompt:
    instruction: str
    demos: tuple[Demo, ...] = ()


@dataclass(frozen=True)
class PhaseUsage:
    """LM usage of one phase. cost_usd is None when no price is known (never a fake 0)."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    errors: int = 0
    # Server-side LM time as the gateway measured it (None when not measured, e.g. older
    # records): `lm_seconds` sums every call's handling time (it exceeds wall time when calls
    # overlap); `lm_busy_seconds` is the wall time with at least one call in flight, so
    # phase wall time minus it is the harness's own time. Timing is measured, not consumed:
    # it takes no part in equality, so two runs that spent the same calls and tokens compare
    # equal whatever their clocks said.
    lm_seconds: float | None = field(default=None, compare=False)
    lm_busy_seconds: float | None = field(default=None, compare=False)
    # Of `calls`, how many were answered from a recording (replay/resume) rather than by the
    # LM now. Like timing it says how the calls were obtained, not what was spent, so a
    # replayed run compares equal to the run it replays; older records read as 0.
    replayed_calls: int = field(default=0, compare=False)
    # What the calls would have cost on the named model when no real cost applies (the
    # simulated LM): an estimate, shown as one ("est."), never as cost_usd.
    cost_usd_estimate: float | None = field(default=None, compare=False)
    # Answers cut off by the completion-token limit (finish_reason "length").
    truncated: int = field(default=0, compare=False)

    def __add__(self, other: PhaseUsage) -> PhaseUsage:
        return PhaseUsage(
            calls=self.calls + other.calls,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=_add_known(self.cost_usd, other.cost_usd),
            errors=self.errors + other.errors,
            lm_seconds=_add_known(self.lm_seconds, other.lm_seconds),
            lm_busy_seconds=_add_known(self.lm_busy_seconds, other.lm_busy_seconds),
            replayed_calls=self.replayed_calls + other.replayed_calls,
            cost_usd_estimate=_add_known(self.cost_usd_estimate, other.cost_usd_estimate),
            truncated=self.truncated + other.truncated,
        )


def _add_known(a: float | None, b: float | None) -> float | None:
    """None + None stays None (unknown is never a fake 0); otherwise None counts as 0."""
    return None if a is None and b is None else (a or 0.0) + (b or 0.0)


@dataclass(frozen=True)
class TrajectoryPoint:
    """The optimizer's best score so far after spending this much budget."""

    lm_calls: int
    rollouts: int | None
    score: float
    label: str = ""


@dataclass(frozen=True)
class CaseConfig:
    model: str
    mode: Mode
    train_size: int
    val_size: int
    test_size: int
    budget: dict[str, Any]
    seed: int
    data_seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LMInfo:
    backend: str  # sim | openai | local | compatible
    model: str
    base_url: str | None
    simulated: bool
    # The recording a replayed run was answered from (no LM called); None when live.
    replayed_from: str | None = None


@dataclass(frozen=True)
class DataInfo:
    source: str
    digests: dict[str, str]


@dataclass(frozen=True)
class Scores:
    baseline_test_accuracy: float | None
    optimized_test_accuracy: float | None
    best_val_score: float | None
    baseline_per_item: tuple[ItemResult, ...] = ()
    per_item: tuple[ItemResult, ...] = ()

    @property
    def improvement(self) -> float | None:
        if self.baseline_test_accuracy is None or self.optimized_test_accuracy is None:
            return None
        return self.optimized_test_accuracy - self.baseline_test_accuracy


@dataclass(frozen=True)
class Timing:
    optimize_seconds: float | None = None
    eval_seconds: float | None = None
    elapsed_seconds: float | None = None


@dataclass(frozen=True)
class RunRecord:
    """One benchmark case: one optimizer, one mode, one model, one seed."""

    optimizer: str
    status: Status
    config: CaseConfig
    lm: LMInfo
    data: DataInfo
    results: Scores
    optimized_prompt: OptimizedPrompt | None
    usage: dict[str, PhaseUsage]
    trajectory: tuple[TrajectoryPoint, ...]
    timing: Timing
    started_at: str
    error: str | None = None
    backend: str | None = None  # e.g. Synth "hosted" | "local"
    details: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=lambda: package_versions())
    schema_version: int = SCHEMA_VERSION

    @property
    def case_id(self) -> str:
        """Stable identity of a case across runs (what a regression gate matches on)."""
        return f"{self.optimizer}[{self.config.mode}-{self.lm.model}-seed{self.config.seed}]"

    def total_usage(self) -> PhaseUsage:
        total = PhaseUsage(cost_usd=None)
        for phase in self.usage.values():
            total = total + phase
        return total

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["results"]["improvement"] = self.results.improvement
        out["case_id"] = self.case_id
        if out["lm"].get("replayed_from") is None:
            out["lm"].pop("replayed_from", None)  # live records read as they always did
        if out.get("optimized_prompt"):
            for demo in out["optimized_prompt"]["demos"]:
                if demo.get("reasoning") is None:
                    demo.pop("reasoning", None)
        # Keep the JSON's reading order: identity first, then what was measured.
        order = ["schema_version", "case_id", "optimizer", "status", "error", "backend"]
        return {**{k: out[k] for k in order}, **{k: v for k, v in out.items() if k not in order}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RecordError(
                f"result schema_version {version!r} is not supported (expected {SCHEMA_VERSION})"
            )
        try:
            res = data["results"]
            prompt = data.get("optimized_prompt")
            return cls(
                schema_version=version,
                optimizer=data["optimizer"],
                status=data["status"],
                error=data.get("error"),
                backend=data.get("backend"),
                config=_build(CaseConfig, data["config"]),
                lm=_build(LMInfo, data["lm"]),
                data=_build(DataInfo, data["data"]),
                results=Scores(
                    baseline_test_accuracy=res.get("baseline_test_accuracy"),
                    optimized_test_accuracy=res.get("optimized_test_accuracy"),
                    best_val_score=res.get("best_val_score"),
                    baseline_per_item=tuple(
                        _build(ItemResult, i) for i in res.get("baseline_per_item", ())
                    ),
                    per_item=tuple(_build(ItemResult, i) for i in res.get("per_item", ())),
                ),
                optimized_prompt=None
                if prompt is None
                else OptimizedPrompt(
                    instruction=prompt["instruction"],
                    demos=tuple(_build(Demo, d) for d in prompt.get("demos", ())),
                ),
                usage={k: _build(PhaseUsage, v) for k, v in data.get("usage", {}).items()},
                trajectory=tuple(_build(TrajectoryPoint, p) for p in data.get("trajectory", ())),
                timing=_build(Timing, data.get("timing", {})),
                started_at=data["started_at"],
                details=dict(data.get("details", {})),
                versions=dict(data.get("versions", {})),
            )
        except (KeyError, TypeError) as exc:
            raise RecordError(f"malformed result record: {exc!r}") from None


def _build(cls: type, values: dict[str, Any]) -> Any:
    """Construct a record part, ignoring keys this version does not know."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def accuracy(items: tuple[ItemResult, ...] | list[ItemResult]) -> float | None:
    return None if not items else sum(i.correct for i in items) / len(items)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def timestamp() -> str:
    """YYYYMMDD_HHMMSS, the suffix the earlier benchmark's result files used."""
    return datetime.now().strftime("%Y%m%d_%H%M%S")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("mipro-bench", "dspy", "synth-ai", "openai", "optuna", "litellm"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_json_atomic(path: Path, payload: dict[str, Any]) -> Path:
    """Write to a temp file in the same directory, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def result_path(results_dir: Path, optimizer_slug: str, stamp: str | None = None) -> Path:
    """results/banking77_<optimizer>_YYYYMMDD_HHMMSS.json, never overwriting a sibling.

    The returned path exists (empty) when this returns: it is claimed for the caller,
    who writes the record there with `write_json_atomic`.
    """
    stamp = stamp or timestamp()
    results_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        suffix = f"_{n}" if n else ""
        path = results_dir / f"banking77_{optimizer_slug}_{stamp}{suffix}.json"
        # Claim the name with O_EXCL: xdist workers (other processes) finishing a case in the
        # same second would otherwise pick the same free name and one record would replace
        # the other. The empty claim is replaced atomically by write_json_atomic.
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            n += 1
            continue
        return path


def write_record(record: RunRecord, results_dir: Path, optimizer_slug: str) -> Path:
    return write_json_atomic(result_path(results_dir, optimizer_slug), record.to_dict())


def read_record(path: Path) -> RunRecord:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"{path}: no such result file") from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON ({exc})") from None
    return RunRecord.from_dict(data)
