"""The run's journal plan: what it journals, answers from and saves of its LM traffic.

The gateway journals every chat call of a case (`lm/journal.py`); this module
decides, for a whole run and the same way for every entry point (the session
engine asks it, `mipro_bench/engine.py`), so that no finished LM call is paid twice:

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

Which case a finished record or a journal belongs to (case keys and scopes)
is `mipro_bench/resume.py`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipro_bench.errors import UserError
from mipro_bench.lm.recording import Recording, RecordingError
from mipro_bench.lm.settings import LMSettings
from mipro_bench.results import RunRecord

JOURNAL_SUBDIR = "journal"


class JournalPlanError(UserError, ValueError):
    """A resume/record/replay request that cannot work (one line, exit 2)."""


@dataclass(frozen=True)
class JournalPlan:
    """The run's --resume / --record / --replay choice, checked before anything runs."""

    resume: bool = False
    record: Path | None = None
    replay: Path | None = None
    recording: Recording | None = None  # loaded from `replay`

    @classmethod
    def from_options(cls, *, resume: bool, record: str | Path | None,
                     replay: str | Path | None) -> JournalPlan:
        if replay is not None and resume:
            raise JournalPlanError("--replay answers from a recording only; it cannot be "
                                  "combined with --resume")
        recording = None
        if replay is not None:
            try:
                recording = Recording.load(Path(replay))
            except RecordingError as exc:
                raise JournalPlanError(f"--replay: {exc}") from None
        if record is not None:
            target = Path(record)
            if target.is_dir():
                raise JournalPlanError(f"--record {target}: is a directory; name a file, e.g. "
                                      "results/run.recording.gz")
            folder = target.parent
            if not folder.exists():
                raise JournalPlanError(f"--record {target}: folder {folder} does not exist")
            # Found out only when the run ends, this would lose the recording of a paid run.
            if not folder.is_dir():
                raise JournalPlanError(f"--record {target}: {folder} is not a directory")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise JournalPlanError(f"--record {target}: {folder} is not writable")
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

    def save_recording(self, results_dir: Path, records: Iterable[RunRecord]) -> Path | None:
        """Write `--record PATH` from the scopes of this run's records (None when not
        recording); the LM is the one the gateway noted in the journal dir."""
        journal = self.journal_dir(results_dir)
        if self.record is None or journal is None or not journal.is_dir():
            return None
        scopes = set().union(*(record_scopes(r) for r in records))
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
