"""One matrix case as a pytest test: its parameters, its run, its floors, its record.

The plugin parametrizes every test that asks for `case` with the session's
matrix (`pytest_generate_tests`), so one benchmark function serves every
optimizer and cases cannot drift apart in how they run, skip, assert or report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mipro_bench.continuity import run_or_reuse
from mipro_bench.data import Splits
from mipro_bench.harness import Harness
from mipro_bench.lm.endpoint import LMEndpoint
from mipro_bench.matrix import Case, Matrix
from mipro_bench.optimizers import get_spec
from mipro_bench.results import RunRecord

USER_PROPERTY = "mipro_record"  # request.node.user_properties entry holding record.to_dict()
RECORD_KEY = pytest.StashKey[RunRecord]()  # the same record on item.stash


def case_params(matrix: Matrix, optimizers: tuple[str, ...] | None = None) -> list[Any]:
    """pytest.param per matrix case, id like `<optimizer>-instruction_only-gpt-4.1-nano-seed1`
    (unsupported ones included: they skip with their reason when run); only the selected
    optimizers' cases when `optimizers` is given."""
    return [pytest.param(case, id=case.id, marks=[pytest.mark.benchmark_case])
            for case in matrix.cases if optimizers is None or case.optimizer in optimizers]


def run_bench_case(
    case: Case,
    *,
    item: pytest.Item,
    splits: Splits,
    endpoint: LMEndpoint,
    results_dir: Path,
    workdir: Path,
    session: Any | None = None,
    progress: Callable[[str], None] | None = None,
    harness: Harness | None = None,
    session_options: dict[str, Any] | None = None,
    resume: bool = False,
    say: Callable[[str], None] | None = None,
    watch: Any = None,
) -> RunRecord:
    """Run `case` (or skip it with its reason), attach the record, assert its floors."""
    if case.unsupported:
        if session is not None:
            from mipro_bench.compare import UnsupportedCase

            session.add_unsupported(
                UnsupportedCase(case.optimizer, case.mode, case.model, case.unsupported))
        pytest.skip(f"not supported: {case.unsupported}")
    if case.model != endpoint.settings.model:
        pytest.skip(f"model {case.model} not selected (this session runs "
                    f"{endpoint.settings.model}; see --mipro-model)")
    options = {**case.options, **(session_options or {})}
    record, path = run_or_reuse(
        spec=get_spec(case.optimizer), options=options, budget=case.budget, mode=case.mode,
        seed=case.seed, label=case.id, splits=splits, endpoint=endpoint,
        results_dir=results_dir, workdir=workdir, harness=harness, progress=progress,
        resume=resume, say=say, watch=watch)
    item.user_properties.append((USER_PROPERTY, record.to_dict()))
    item.user_properties.append(("mipro_record_path", str(path)))
    item.stash[RECORD_KEY] = record
    if session is not None:
        session.add_record(record)
    problems = case.floors(record.lm.simulated).violations(record)
    judge = getattr(session, "judge_floors", None)
    if problems and judge is not None:  # the session may only report floors (floors_policy)
        problems = judge(case, record, problems)
    if problems:
        pytest.fail(f"{case.id}: " + "; ".join(problems) + f" (record: {path})", pytrace=False)
    return record


