"""Where the Synth adapter's local jobs go: the `mipro_bench.synth_backends` entry points.

With `--synth-backend local` a job is submitted to a Synth-compatible backend on this
machine. The one this project ships (`local`: Synth's published MIPROv2 behind the
hosted service's routes) lives in the offline package, which the core never imports,
so the adapter looks it up here by name, as it would a third party's. An entry point
names a factory `(*, lm_api_key, network) -> context manager` yielding a running
backend with `.url` and `.api_key`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from importlib import metadata
from typing import Any, Protocol

from mipro_bench.optimizers.base import UsageError

ENTRY_POINT_GROUP = "mipro_bench.synth_backends"
LOCAL = "local"


class RunningSynthBackend(Protocol):
    """A Synth-compatible backend the SDK can submit to and poll."""

    @property
    def url(self) -> str: ...

    api_key: str


SynthBackendFactory = Callable[..., AbstractContextManager[Any]]


def synth_backend_factory(name: str = LOCAL) -> SynthBackendFactory:
    """The factory registered under `name` (UsageError, one line, when none is)."""
    found = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if name not in found:
        raise UsageError(f"no Synth backend {name!r} is registered in the "
                         f"{ENTRY_POINT_GROUP!r} entry-point group (registered: "
                         f"{', '.join(sorted(found)) or 'none'}; is mipro-bench installed?)")
    factory = found[name].load()
    if not callable(factory):
        raise UsageError(f"Synth backend plugin {name!r} ({found[name].value}) is not callable")
    return factory  # type: ignore[no-any-return]
