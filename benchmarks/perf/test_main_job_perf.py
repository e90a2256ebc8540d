"""The offline main job (`python dev.py bench` = `run_comparison.py --all`) at the default
sizes: its wall time, and how that splits between the LM and the harness.

Run with numbers: `pytest benchmarks/perf/test_main_job_perf.py --benchmark-enable -s`.
Under the default `--benchmark-disable` each variant still runs once as a plain test
and prints its table; nothing asserts a wall-clock limit (two shared cores are too
noisy to gate on; the target, under 60 s on 2 cores, is reported, not enforced).

Where the numbers come from:
- wall: the whole `python run_comparison.py --all` process, start to exit;
- per case and phase: the record's `details.phase_seconds` (the runner's clock) and
  `usage[phase].lm_busy_seconds`, the gateway's server-side time with at least one
  call of that case and phase in flight (`lm_seconds` sums the calls, so it exceeds
  wall time when calls overlap);
- harness = case time - LM busy time (optimizer code, DSPy/litellm, the task app,
  the local Synth backend, HTTP clients); outside the cases = wall - case time
  (interpreter start, imports, data, servers, comparison and reports).
The simulated LM runs in the same process as the harness (the gateway thread), so
with concurrent calls its server-side time includes waiting for the GIL.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.plugin_support import REPO, clean_env

pytestmark = pytest.mark.integration
TARGET_S = 20.0  # the two seed optimizers' comparison (issue: <= 20 s wall on 2 cores)
TARGET_HARNESS_RATIO = 1.5  # each case's harness time <= 1.5 x its LM-busy time
TARGET_PEAK_MIB = 400.0
PHASES = ("baseline_eval", "optimize", "test_eval")


@pytest.fixture(scope="module")
def real_data_dir() -> Path:
    path = Path(os.environ.get("BANKING77_DIR") or REPO.parent / "shared" / "banking77")
    if not (path / "train.csv").is_file():
        pytest.skip(f"real Banking77 not found at {path}; set BANKING77_DIR")
    return path


@dataclass
class CaseTime:
    case_id: str
    elapsed: float
    phases: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # wall, busy, calls

    @property
    def lm_busy(self) -> float:
        return sum(busy for _, busy, _ in self.phases.values())


@dataclass
class MainJob:
    wall: float
    returncode: int
    output: str
    cases: list[CaseTime]
    report: Path | None
    peak_mib: float | None = None  # the largest child process's peak RSS so far
    results: Path | None = None

    @property
    def in_cases(self) -> float:
        return sum(c.elapsed for c in self.cases)

    @property
    def lm_busy(self) -> float:
        return sum(c.lm_busy for c in self.cases)


def run_main_job(results: Path, data_dir: Path, extra: list[str]) -> MainJob:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(REPO / "run_comparison.py"), "--all", "--results-dir", str(results),
         *extra],
        cwd=REPO, env=clean_env(data_dir), capture_output=True, text=True, timeout=1800,
    )
    wall = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    cases: list[CaseTime] = []
    found = sorted(results.glob("comparison_*.json"))
    if found:
        for record in json.loads(found[-1].read_text(encoding="utf-8"))["records"]:
            seconds = record["details"].get("phase_seconds", {})
            cases.append(CaseTime(
                case_id=record["case_id"],
                elapsed=record["timing"]["elapsed_seconds"],
                phases={phase: (seconds.get(phase, 0.0),
                                record["usage"][phase]["lm_busy_seconds"] or 0.0,
                                record["usage"][phase]["calls"])
                        for phase in PHASES if phase in record["usage"]},
            ))
    last = (done.stdout.strip().splitlines() or [""])[-1]
    report = Path(last.removeprefix("Report: ")) if last.startswith("Report: ") else None
    return MainJob(wall, done.returncode, done.stdout + done.stderr, cases, report, peak_mib,
                   results)


def table(name: str, job: MainJob) -> list[str]:
    peak = "-" if job.peak_mib is None else f"{job.peak_mib:.0f} MiB"
    lines = [f"\nmain job ({name}), default sizes: wall {job.wall:.1f} s "
             f"(target <= {TARGET_S:.0f} s on 2 cores), peak RSS of one process {peak} "
             f"(target <= {TARGET_PEAK_MIB:.0f} MiB)",
             f"{'case / phase':<52}{'wall s':>8}{'LM busy s':>11}{'harness s':>11}{'calls':>7}"
             f"{'harness/LM':>12}"]
    for case in job.cases:
        ratio = (case.elapsed - case.lm_busy) / case.lm_busy if case.lm_busy else float("nan")
        lines.append(f"{case.case_id:<52}{case.elapsed:>8.1f}{case.lm_busy:>11.1f}"
                     f"{case.elapsed - case.lm_busy:>11.1f}{'':>7}{ratio:>11.2f}x")
        for phase, (wall, busy, calls) in case.phases.items():
            lines.append(f"  {phase:<50}{wall:>8.1f}{busy:>11.1f}{wall - busy:>11.1f}{calls:>7}")
    lines.append(f"(target: harness/LM <= {TARGET_HARNESS_RATIO:.1f}x for every case)")
    lines.append(f"{'all cases':<52}{job.in_cases:>8.1f}{job.lm_busy:>11.1f}"
                 f"{job.in_cases - job.lm_busy:>11.1f}")
    lines.append(f"{'outside the cases (start, imports, servers, reports)':<52}"
                 f"{job.wall - job.in_cases:>8.1f}" if name.startswith("serial") else
                 "cases overlap across workers: compare the wall time with the serial run")
    return lines


# The target is for the earlier benchmark's two optimizers; "all" adds every
# registered one (GEPA too).
SEED_PAIR = ("dspy_miprov2", "synth_mipro")


def expected_cases(optimizers: tuple[str, ...] | None) -> int:
    from mipro_bench.matrix import load_matrix

    return sum(1 for c in load_matrix().cases
               if not c.unsupported and (optimizers is None or c.optimizer in optimizers))


@pytest.mark.parametrize(("workers", "optimizers"), [(None, SEED_PAIR), (None, None), (2, None)],
                         ids=["serial-seed-pair", "serial-all", "xdist2-all"])
def test_main_job_wall_time_and_lm_share(benchmark: Any, real_data_dir: Path, tmp_path: Path,
                                         workers: int | None,
                                         optimizers: tuple[str, ...] | None,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    extra = [] if workers is None else ["-n", str(workers)]
    if optimizers is not None:
        extra += ["--optimizers", ",".join(optimizers)]
    runs: list[MainJob] = []

    def once() -> MainJob:
        job = run_main_job(tmp_path / f"results-{len(runs)}", real_data_dir, extra)
        runs.append(job)
        return job

    job = benchmark.pedantic(once, rounds=1, iterations=1)
    assert job.returncode == 0, job.output[-4000:]
    assert job.report is not None and job.report.is_file(), job.output[-2000:]
    assert len(job.cases) == expected_cases(optimizers)
    for case in job.cases:  # the clocks are consistent: LM busy time fits inside the phase
        for phase, (wall, busy, calls) in case.phases.items():
            assert calls > 0, (case.case_id, phase)
            assert 0 < busy <= wall + 0.05, (case.case_id, phase, wall, busy)
    name = ("serial" if workers is None else f"xdist -n {workers}") + (
        f", {' + '.join(optimizers)}" if optimizers else ", every optimizer")
    benchmark.extra_info.update({
        "wall_s": round(job.wall, 2), "cases_s": round(job.in_cases, 2),
        "lm_busy_s": round(job.lm_busy, 2), "harness_in_cases_s": round(
            job.in_cases - job.lm_busy, 2)})
    with capsys.disabled():
        print("\n".join(table(name, job)))


def outcomes(results: Path) -> dict[str, Any]:
    """Per case: per-item results, prompt and call counts (what `--compare-fail exact` checks)."""
    found = sorted(results.glob("comparison_*.json"))
    records = json.loads(found[-1].read_text(encoding="utf-8"))["records"] if found else []
    return {r["case_id"]: (r["results"], r["optimized_prompt"],
                           {p: u["calls"] for p, u in r["usage"].items()}) for r in records}


def test_respx_transport_against_the_served_gateway(benchmark: Any, real_data_dir: Path,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`--lm respx` (no LM socket, DSPy through litellm) against the served simulated LM:
    the main job alternated served / respx / served / respx in one session, so both see the
    same machine load; the records must be equal, the speed is reported as a ratio."""
    runs: dict[str, list[MainJob]] = {"served": [], "respx": []}

    def alternate() -> None:
        for _ in range(2):
            for name, extra in (("served", []), ("respx", ["--lm", "respx"])):
                results = tmp_path / f"{name}-{len(runs[name])}"
                job = run_main_job(results, real_data_dir, extra)
                assert job.returncode == 0, job.output[-4000:]
                runs[name].append(job)

    benchmark.pedantic(alternate, rounds=1, iterations=1)
    served, mounted = runs["served"], runs["respx"]
    assert served[0].results is not None and mounted[0].results is not None
    assert outcomes(served[0].results) == outcomes(mounted[0].results)
    lines = ["\n--lm respx vs the served gateway (main job, default sizes, alternated):",
             f"{'':<10}{'wall s':>10}{'in cases s':>12}{'LM busy s':>11}{'harness s':>11}"]
    for name, jobs in runs.items():
        for i, job in enumerate(jobs):
            lines.append(f"{name + ' #' + str(i + 1):<10}{job.wall:>10.1f}{job.in_cases:>12.1f}"
                         f"{job.lm_busy:>11.1f}{job.in_cases - job.lm_busy:>11.1f}")
    ratio = sum(j.wall for j in mounted) / sum(j.wall for j in served)
    cases = sum(j.in_cases for j in mounted) / sum(j.in_cases for j in served)
    lines.append(f"respx / served: wall {ratio:.2f}x, time in cases {cases:.2f}x")
    benchmark.extra_info.update({"respx_over_served_wall": round(ratio, 3),
                                 "respx_over_served_cases": round(cases, 3)})
    with capsys.disabled():
        print("\n".join(lines))
