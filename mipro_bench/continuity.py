"""Resume, record and replay: what a run keeps so that no finished LM call is paid twice.

The gateway journals every chat call of a case (`lm/journal.py`); this module
decides, for a whole run and the same way for every entry point:

- `--resume`: journals live in `<results>/journal/`. A case whose succeeded
  record exists for the same *case key* is not run again (its record joins the
  comparison, marked reused); a case that died mid-way gets its journal
  replayed (answered without the LM) and continues live when it runs out.
- `--record PATH`: the session's traffic is journaled and saved as one
  compressed recording at the end.
- `--replay PATH`: the gateway answers only from the recording (no key, no
  network, no simulated LM); a request that is not in it fails its case
  naming what changed. Records keep the recorded model and say
  `lm.replayed_from`.

The case key names everything that decides a case's LM traffic: optimizer,
mode, model, seed, budget, result-changing options, the panel's digests, the
LM, and the suite's version. The case's gateway scope hashes the part of it
that names the case (not its budget), so a journal is found again by the
case that wrote it, and identical requests are answered from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipro_bench.errors import UserError
from mipro_bench.lm.recording import Recording, RecordingError, suite_version
from mipro_bench.lm.settings import LMSettings
from mipro_bench.results import RecordError, RunRecord, read_record

JOURNAL_SUBDIR = "journal"


class ContinuityError(UserError, ValueError):
    """A resume/record/replay request that cannot work (one line, exit 2)."""


@dataclass(frozen=True)
class Continuity:
    """The run's --resume / --record / --replay choice, checked before anything runs."""

    resume: bool = False
    record: Path | None = None
    replay: Path | None = None
    recording: Recording | None = None  # loaded from `replay`

    @classmethod
    def from_options(cls, *, resume: bool, record: str | Path | None,
                     replay: str | Path | None) -> Continuity:
        if replay is not None and resume:
            raise ContinuityError("--replay answers from a recording only; it cannot be "
                                  "combined with --resume")
        recording = None
        if replay is not None:
            try:
                recording = Recording.load(Path(replay))
            except RecordingError as exc:
                raise ContinuityError(f"--replay: {exc}") from None
        if record is not None:
            target = Path(record)
            if target.is_dir():
                raise ContinuityError(f"--record {target}: is a directory; name a file, e.g. "
                                      "results/run.recording.gz")
            folder = target.parent
            if not folder.exists():
                raise ContinuityError(f"--record {target}: folder {folder} does not exist")
            # Found out only when the run ends, this would lose the recording of a paid run.
            if not folder.is_dir():
                raise ContinuityError(f"--record {target}: {folder} is not a directory")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise ContinuityError(f"--record {target}: {folder} is not writable")
        return cls(resume=resume, record=Path(record) if record else None,
                   replay=Path(replay) if replay else None, recording=recording)

    @property
    def active(self) -> bool:
        return self.resume or self.record is not None or self.replay is not None

    def journal_dir(self, results_dir: Path) -> Path | None:
        """Where the gateway journals (None: no journal)."""
        if self.resume or self.record is not None:
            return Path(results_dir) / JOURNAL_SUBDIR
        return None

    def lm_settings(self, settings: LMSettings) -> LMSettings:
        """A replay talks to no LM: it names the recorded one (model, backend) instead."""
        if self.recording is None:
            return settings
        recorded = self.recording.settings()
        # What this command asks of every request (sampling, token limits) stays the
        # command's: a replay must send the requests the recorded run sent. So does how the
        # gateway is reached (`--lm respx --replay` mounts it in-process), so the command's
        # LM backend plugin is the one that starts (its replay start: no LM).
        return dataclasses.replace(
            recorded, replayed_from=str(self.replay), temperature=settings.temperature,
            max_tokens=settings.max_tokens, token_limits=settings.token_limits,
            prices_per_mtok=settings.prices_per_mtok, transport=settings.transport,
            plugin=settings.plugin)

    def gateway_kwargs(self, results_dir: Path) -> dict[str, Any]:
        """The journal and replay arguments of `start_gateway` for this run."""
        journal = self.journal_dir(results_dir)
        kwargs: dict[str, Any] = {"journal_dir": journal}
        if self.recording is not None:
            kwargs.update(replay=self.recording, replay_mode="replay")
        elif self.resume and journal is not None and journal.is_dir():
            # Nothing journaled yet (or no session meta): a fresh start.
            with contextlib.suppress(RecordingError):
                kwargs.update(replay=Recording.from_journal_dir(journal),
                              replay_mode="resume")
        return kwargs

    def save_recording(self, results_dir: Path, scopes: set[str]) -> Path | None:
        """Write `--record PATH` from this session's scopes (None when not recording); the
        LM is the one the gateway noted in the journal dir."""
        journal = self.journal_dir(results_dir)
        if self.record is None or journal is None or not journal.is_dir():
            return None
        full = Recording.from_journal_dir(journal)
        mine = dataclasses.replace(
            full, entries=tuple(e for e in full.entries if e.scope in scopes))
        return mine.save(self.record)


def record_scopes(record: RunRecord) -> set[str]:
    """Every gateway scope a record's LM calls were counted under: the case's own and the
    shared baseline evaluations it used (`details.shared_baseline`)."""
    scopes = {str(record.details["scope"])} if record.details.get("scope") else set()
    for shared in (record.details.get("shared_baseline") or {}).values():
        under = shared.get("counted_under") if isinstance(shared, dict) else None
        scope = under.get("scope") if isinstance(under, dict) else None
        if scope:
            scopes.add(str(scope))
    return scopes


# --- case keys and reuse -------------------------------------------------------------------


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


def run_or_reuse(*, spec: Any, options: Mapping[str, Any], budget: Any, mode: str, seed: int,
                 label: str, splits: Any, endpoint: Any, results_dir: Path, workdir: Path,
                 harness: Any = None, progress: Any = None, usage: Any = None,
                 resume: bool = False, say: Any = None,
                 watch: Any = None) -> tuple[RunRecord, Path]:
    """One case under its key: the reused record on `resume` when one fits, else a run
    under the case's own scope (so its journal is found again). The same for pytest and
    the CLIs."""
    from mipro_bench.optimizers.base import OptimizeRequest
    from mipro_bench.runner import run_case

    key = case_key(optimizer=spec.name, mode=mode, seed=seed, budget=budget.to_dict(),
                   options=options, speed_only=spec.concurrency_options,
                   digests=splits.digests(), settings=endpoint.settings)
    reuse = find_reusable(results_dir, key, label) if resume else Reuse(None, None)
    if reuse.note and say is not None:
        say(reuse.note)
    if reuse.record is not None:
        path = Path(results_dir) / reuse.record.details["reused_from"]
        if say is not None:
            say(f"resume: {label}: reusing {path.name} (not run again)")
        return reuse.record, path
    scope = case_scope(spec.slug, mode, seed, key)
    request = OptimizeRequest(
        splits=splits, lm=endpoint, mode=mode, budget=budget,  # type: ignore[arg-type]
        seed=seed, workdir=workdir, scope=scope, progress=progress, options=dict(options),
        harness=harness, usage=usage)
    return run_case(spec.create(dict(options)), request, results_dir=results_dir,
                    details={"case_key": key, "case_key_hash": key_hash(key)}, watch=watch)
