"""A whole session's LM traffic in one compressed file, to replay a run without the LM.

A journal dir is many append-only files that survive a crash; a recording is
the one file to keep, share or commit: gzip'd JSON lines, a header line
first (format name and version, suite version, the recorded LM, creation
time), then one journal entry per call, each (scope, fingerprint,
occurrence) once. `load` refuses anything it cannot replay faithfully with a
`RecordingError` of one line: a missing file, a truncated or corrupt gzip, a
file of another format or format version.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mipro_bench.lm.journal import JournalEntry, read_journal_dir
from mipro_bench.lm.replay import ReplayIndex
from mipro_bench.lm.settings import LMSettings
from mipro_bench.results import LMInfo

FORMAT = "mipro-bench-lm-recording"
FORMAT_VERSION = 1
SESSION_META = "session.meta.json"  # written into a journal dir by the gateway


class RecordingError(ValueError):
    """A recording that cannot be replayed; the message is one line saying why."""


def suite_version() -> str:
    try:
        return metadata.version("mipro-bench")
    except metadata.PackageNotFoundError:
        return "unknown"


def _public_url(url: str | None) -> str | None:
    """The upstream URL without user info, query or fragment (never a credential)."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def lm_info(settings: LMSettings) -> LMInfo:
    return LMInfo(backend=settings.backend, model=settings.model,
                  base_url=_public_url(settings.base_url), simulated=settings.simulated,
                  transport=settings.transport)


def write_session_meta(journal_dir: Path, settings: LMSettings) -> None:
    """Say which LM a journal dir's calls came from (once; later gateways leave it)."""
    meta = {"format": FORMAT, "suite_version": suite_version(),
            "lm": asdict(lm_info(settings)), "created": _now()}
    try:
        with (Path(journal_dir) / SESSION_META).open("x", encoding="utf-8") as f:
            json.dump(meta, f)
    except FileExistsError:
        pass


def _starts_like_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _lm_from(data: Any, where: str) -> LMInfo:
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        raise RecordingError(f"{where} names no recorded LM model")
    return LMInfo(backend=str(data.get("backend", "unknown")), model=data["model"],
                  base_url=data.get("base_url"), simulated=bool(data.get("simulated")),
                  transport=str(data.get("transport") or "http"))


@dataclass(frozen=True)
class Recording:
    """The recorded calls of a session and the LM that answered them."""

    entries: tuple[JournalEntry, ...]
    lm: LMInfo
    suite_version: str
    created: str
    torn_lines: int = 0  # lines skipped while reading the journals it was built from

    @property
    def model(self) -> str:
        """The recorded model's name (a replayed run keeps it: it is part of every request)."""
        return self.lm.model

    def settings(self) -> LMSettings:
        """Settings naming the recorded LM, for a pure replay (no upstream, no policy used)."""
        return LMSettings(backend=self.lm.backend or "compatible", model=self.lm.model,
                          base_url=self.lm.base_url, simulated=self.lm.simulated)

    def index(self) -> ReplayIndex:
        return ReplayIndex(self.entries)

    @classmethod
    def from_journal_dir(cls, journal_dir: Path, *, lm: LMInfo | None = None) -> Recording:
        """Every call journaled in `journal_dir` (torn lines skipped and counted); the LM is
        the one the gateway noted there, unless `lm` is given."""
        directory = Path(journal_dir)
        if not directory.is_dir():
            raise RecordingError(f"journal dir {directory} does not exist")
        if lm is None:
            meta_path = directory / SESSION_META
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise RecordingError(f"{meta_path} is missing: pass lm= to say which LM "
                                     "answered these calls") from None
            except (OSError, ValueError) as exc:
                raise RecordingError(f"{meta_path} is unreadable: {exc}") from None
            lm = _lm_from(meta.get("lm") if isinstance(meta, dict) else None, str(meta_path))
        read = read_journal_dir(directory)
        entries = sorted(ReplayIndex(read.entries).entries(), key=lambda e: (e.scope, e.at))
        return cls(entries=tuple(entries), lm=lm, suite_version=suite_version(),
                   created=_now(), torn_lines=read.torn_lines)

    def header(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION,
                "suite_version": self.suite_version, "model": self.model,
                "lm": asdict(self.lm), "created": self.created,
                "entries": len(self.entries),
                "scopes": len({e.scope for e in self.entries})}

    def save(self, path: Path) -> Path:
        """Write atomically (temp file + rename): a killed save never leaves half a file."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                   suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb",
                                                           mtime=0) as out:
                out.write(json.dumps(self.header(), separators=(",", ":")).encode() + b"\n")
                for entry in self.entries:
                    out.write(json.dumps(entry.to_json(), separators=(",", ":")).encode()
                              + b"\n")
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; a recording is for sharing, like a record
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def load(cls, path: Path) -> Recording:
        source = Path(path)
        if source.is_dir():
            raise RecordingError(f"recording {source} is a directory (a journal dir? use "
                                 "Recording.from_journal_dir)")
        if not source.exists():
            raise RecordingError(f"recording {source} does not exist")
        try:
            with gzip.open(source, "rb") as f:
                lines = f.read().splitlines()
        except gzip.BadGzipFile as exc:
            if not _starts_like_gzip(source):
                raise RecordingError(f"recording {source} is not gzip data: not a "
                                     f"{FORMAT} file") from None
            raise RecordingError(f"recording {source} is corrupt (gzip: {exc})") from None
        except EOFError:
            raise RecordingError(f"recording {source} is truncated (the gzip stream ends "
                                 "early); save it again") from None
        except zlib.error as exc:
            raise RecordingError(f"recording {source} is corrupt (gzip: {exc})") from None
        except OSError as exc:
            raise RecordingError(f"recording {source} cannot be read: "
                                 f"{exc.strerror or exc}") from None
        return cls._parse(source, lines)

    @classmethod
    def _parse(cls, source: Path, lines: list[bytes]) -> Recording:
        try:
            header = json.loads(lines[0]) if lines else None
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise RecordingError(f"{source} is not a {FORMAT} file (foreign gzip content)")
        version = header.get("format_version")
        if version != FORMAT_VERSION:
            raise RecordingError(f"{source} is {FORMAT} format version {version!r}; this "
                                 f"suite reads version {FORMAT_VERSION}: re-record with it")
        lm = _lm_from(header.get("lm"), str(source))
        entries = []
        for number, raw in enumerate(lines[1:], start=2):
            if not raw.strip():
                continue
            try:
                entries.append(JournalEntry.from_json(json.loads(raw)))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise RecordingError(f"{source} line {number} is not a recorded call "
                                     "(corrupt recording)") from None
        return cls(entries=tuple(entries), lm=lm,
                   suite_version=str(header.get("suite_version", "unknown")),
                   created=str(header.get("created", "")))
