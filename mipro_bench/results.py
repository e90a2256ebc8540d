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

SCHEMA_VERSION = 2
# Versions `from_dict` reads. Version 1 had no `by_executor` and no per-item `match`: read
# back, its native per-item results become its one `by_executor` entry (no diagnostics).
READABLE_SCHEMA_VERSIONS = (1, 2)

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
    # The step of the label rule that mapped the answer (`labels.match_label`: exact,
    # normalised, sentence, fuzzy, none); None when unknown (version-1 records, LM errors).
    # A diagnostic, not an outcome: it takes no part in equality, so the exact gate compares
    # predictions, and a version-1 baseline still equals the same predictions today.
    match: str | None = field(default=None, compare=False)


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
    # How the suite reached the LM: "http" (the gateway on a port) or "respx" (in-process).
    transport: str = "http"


@dataclass(frozen=True)
class DataInfo:
    source: str
    digests: dict[str, str]


MATCH_STEPS = ("exact", "normalised", "sentence", "fuzzy", "none")


@dataclass(frozen=True)
class ParseDiagnostics:
    """Why one evaluation scored what it did: how its answers were parsed, what it spent.

    `steps` counts the items each step of the label rule decided (items that failed in the
    LM are in `errors`, not in a step); `no_intent` counts answered items that named no
    intent (step "none"); `lm_calls` is the gateway's count for the evaluation's phase, so
    `calls_per_item` > 1 shows adapter retries and fallbacks (DSPy's JSONAdapter).
    """

    n_items: int
    steps: dict[str, int] = field(default_factory=dict)
    no_intent: int = 0
    errors: int = 0
    lm_calls: int | None = None

    @property
    def calls_per_item(self) -> float | None:
        if self.lm_calls is None or not self.n_items:
            return None
        return self.lm_calls / self.n_items

    def share(self, step: str) -> float | None:
        known = sum(self.steps.values())
        return None if not known else self.steps.get(step, 0) / known

    @classmethod
    def of(cls, items: tuple[ItemResult, ...] | list[ItemResult],
           lm_calls: int | None = None) -> ParseDiagnostics | None:
        """None when no item says how it was parsed (e.g. a version-1 record)."""
        if not any(i.match for i in items):
            return None
        steps = dict.fromkeys(MATCH_STEPS, 0)
        for item in items:
            if item.error is None and item.match is not None:
                steps[item.match] = steps.get(item.match, 0) + 1
        return cls(
            n_items=len(items), steps=steps,
            no_intent=sum(1 for i in items if i.error is None and i.predicted is None),
            errors=sum(1 for i in items if i.error), lm_calls=lm_calls)


@dataclass(frozen=True)
class ExecutorScores:
    """One executor's test results for a case's baseline and optimized prompt.

    `phases` names the usage phases the two evaluations were counted under (the native
    executor's are `baseline_eval`/`test_eval`; any other's `baseline_eval:<name>` /
    `test_eval:<name>`). `baseline_shared` says where the baseline came from when the
    session had already scored it (see `SharedBaselines`): the case that
    ran it, the scope and phase its LM calls were counted under. `error` is set when this
    executor could not score a prompt (the native results still stand).
    """

    native: bool
    baseline_per_item: tuple[ItemResult, ...] = ()
    per_item: tuple[ItemResult, ...] = ()
    baseline_diagnostics: ParseDiagnostics | None = None
    optimized_diagnostics: ParseDiagnostics | None = None
    phases: dict[str, str] = field(default_factory=dict)
    baseline_shared: dict[str, Any] | None = None
    error: str | None = None

    @property
    def baseline_test_accuracy(self) -> float | None:
        return accuracy(self.baseline_per_item)

    @property
    def optimized_test_accuracy(self) -> float | None:
        return accuracy(self.per_item)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["baseline_per_item"] = [_item_dict(i) for i in self.baseline_per_item]
        out["per_item"] = [_item_dict(i) for i in self.per_item]
        for name in ("baseline_diagnostics", "optimized_diagnostics"):
            diag = getattr(self, name)
            if diag is not None:
                out[name]["calls_per_item"] = diag.calls_per_item
        return {"baseline_test_accuracy": self.baseline_test_accuracy,
                "optimized_test_accuracy": self.optimized_test_accuracy, **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutorScores:
        def diag(value: Any) -> ParseDiagnostics | None:
            return None if value is None else _build(ParseDiagnostics, value)

        return cls(
            native=bool(data.get("native", False)),
            baseline_per_item=tuple(_build(ItemResult, i)
                                    for i in data.get("baseline_per_item", ())),
            per_item=tuple(_build(ItemResult, i) for i in data.get("per_item", ())),
            baseline_diagnostics=diag(data.get("baseline_diagnostics")),
            optimized_diagnostics=diag(data.get("optimized_diagnostics")),
            phases=dict(data.get("phases") or {}),
            baseline_shared=data.get("baseline_shared"),
            error=data.get("error"),
        )


def _item_dict(item: ItemResult) -> dict[str, Any]:
    out = asdict(item)
    if out.get("match") is None:
        out.pop("match", None)  # version-1 items read as they always did
    return out


@dataclass(frozen=True)
class Scores:
    baseline_test_accuracy: float | None
    optimized_test_accuracy: float | None
    best_val_score: float | None
    baseline_per_item: tuple[ItemResult, ...] = ()
    per_item: tuple[ItemResult, ...] = ()
    # The native executor's results are the fields above (what the gate and every
    # version-1 reader use); `by_executor` holds every executor's, the native one included,
    # native first. Empty for a record that never reached a test evaluation.
    native_executor: str | None = None
    by_executor: dict[str, ExecutorScores] = field(default_factory=dict)

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
        for name in ("baseline_per_item", "per_item"):
            out["results"][name] = [_item_dict(i) for i in getattr(self.results, name)]
        out["results"]["by_executor"] = {
            name: scores.to_dict() for name, scores in self.results.by_executor.items()}
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
        if version not in READABLE_SCHEMA_VERSIONS:
            raise RecordError(
                f"result schema_version {version!r} is not supported (expected one of "
                f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))})"
            )
        try:
            res = data["results"]
            prompt = data.get("optimized_prompt")
            baseline_items = tuple(_build(ItemResult, i) for i in res.get("baseline_per_item", ()))
            items = tuple(_build(ItemResult, i) for i in res.get("per_item", ()))
            details = dict(data.get("details", {}))
            native = res.get("native_executor") or details.get("executor")
            by_executor = {name: ExecutorScores.from_dict(v)
                           for name, v in (res.get("by_executor") or {}).items()}
            if not by_executor and native and (baseline_items or items):
                # A version-1 record: its native results are its only executor's.
                by_executor = {native: ExecutorScores(
                    native=True, baseline_per_item=baseline_items, per_item=items,
                    phases={"baseline": "baseline_eval", "optimized": "test_eval"})}
            return cls(
                schema_version=SCHEMA_VERSION,
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
                    baseline_per_item=baseline_items,
                    per_item=items,
                    native_executor=native,
                    by_executor=by_executor,
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
                details=details,
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
