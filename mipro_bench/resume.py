"""Resume: which case a record or journal belongs to, and whether a finished one is reused.

The case key names everything that decides a case's LM traffic: optimizer,
mode, model, seed, budget, result-changing options, the panel's digests, the
LM, and the suite's version. On `--resume` a case whose succeeded record has
the same key is not run again (`find_reusable`). The case's gateway scope
hashes the part of the key that names the case (not its budget), so a journal
is found again by the case that wrote it, and identical requests are answered
from it. The session engine (`mipro_bench/engine.py`) asks both before it runs
a case; this module runs nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipro_bench.lm.recording import suite_version
from mipro_bench.lm.settings import LMSettings
from mipro_bench.results import RecordError, RunRecord, read_record


def case_key(*, optimizer: str, mode: str, seed: int, budget: Mapping[str, Any],
             options: Mapping[str, Any], speed_only: tuple[str, ...],
             digests: Mapping[str, str], settings: LMSettings) -> dict[str, Any]:
    """What decides a case's LM traffic (speed-only options left out)."""
    return {
        "optimizer": optimizer, "mode": mode, "model": settings.model, "seed": seed,
        "budget": dict(budget),
        "options": {k: v for k, v in sorted(options.items())
                    if k not in speed_only and _json_safe(v)},
        "digests": dict(digests),
        "lm": {"backend": settings.backend, "base_url": settings.base_url,
               "simulated": settings.simulated},
        "suite_version": suite_version(),
    }


def key_hash(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


# What names a case's journal: the case and its panel and LM, but not its budget or options,
# so a resumed or replayed case with another budget still gets every identical request
# answered, and a strict replay can say which request first differed (and in what).
SCOPE_FIELDS = ("optimizer", "mode", "seed", "model", "digests", "lm")


def case_scope(slug: str, mode: str, seed: int, key: Mapping[str, Any]) -> str:
    """The case's gateway scope: readable, and the same every time the case runs."""
    identity = {k: key[k] for k in SCOPE_FIELDS}
    return f"{slug}-{mode}-s{seed}-{key_hash(identity)[:12]}"


def _json_safe(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None) | list | dict)


def _records(results_dir: Path) -> Iterator[tuple[Path, RunRecord]]:
    for path in sorted(Path(results_dir).glob("banking77_*.json")):
        try:
            yield path, read_record(path)
        except (RecordError, OSError, ValueError):
            continue


@dataclass(frozen=True)
class Reuse:
    record: RunRecord | None  # the succeeded record to reuse, marked
    note: str | None  # why an earlier record of the same case was not reused


def find_reusable(results_dir: Path, key: Mapping[str, Any], case_label: str) -> Reuse:
    """The newest succeeded record with this case key, or why an earlier one does not fit."""
    digest = key_hash(key)
    same_case: list[tuple[Path, RunRecord]] = []
    for path, record in _records(results_dir):
        if record.details.get("case_key_hash") == digest and record.status == "succeeded":
            reused = dataclasses.replace(
                record, details={**record.details, "reused_from": path.name})
            return Reuse(reused, None)
        old = record.details.get("case_key")
        if isinstance(old, dict) and all(old.get(k) == key.get(k)
                                         for k in ("optimizer", "mode", "model", "seed")):
            same_case.append((path, record))
    if not same_case:
        return Reuse(None, None)
    path, record = same_case[-1]
    if record.status != "succeeded":
        return Reuse(None, f"resume: {case_label}: {path.name} is {record.status}; the case "
                           "continues from its journal")
    old = record.details["case_key"]
    changed = [_KEY_WORDS.get(k, k) for k in key if old.get(k) != key.get(k)]
    return Reuse(None, f"resume: {case_label}: {path.name} is for another "
                       f"{', '.join(changed)}; the case is rerun")


# How a resume note names a case-key field that changed ("is for another panel").
_KEY_WORDS = {"digests": "panel", "suite_version": "suite version", "lm": "LM endpoint"}
