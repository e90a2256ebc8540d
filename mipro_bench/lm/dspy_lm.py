"""DSPy's view of the LM: a `dspy.LM` pointed at the gateway, and a per-run DSPy cache.

DSPy must send every call through the gateway's scoped URL so usage is
counted per optimizer and phase (its own `lm.history` and `track_usage` miss
proposer copies and worker threads). Its response cache is on by default and
shared on disk across runs, which would make a rerun free and hide variance;
each run therefore gets its own cache directory, or none.

Transport (checked on dspy 3.4.1): with `api_base` set, the default engine
("auto" -> the vendored lm15 stdlib-socket client) posts to
`{api_base}/chat/completions`, as does engine="litellm" (through httpx); both
reach the gateway. With `--lm respx` the gateway has no socket, so DSPy is given the
litellm engine, whose OpenAI client is httpx (respx routes it in-process). litellm would
fetch a price list over the network unless LITELLM_LOCAL_MODEL_COST_MAP is set, which
importing this module does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mipro_bench.lm.endpoint import LMEndpoint

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# DSPy's retries stack on top of the gateway's own upstream retries: keep them few.
MAX_DSPY_RETRIES = 3
CACHE_SUBDIR = "dspy_cache"


def make_dspy_lm(endpoint: LMEndpoint, optimizer: str, phase: str, **kw: Any) -> Any:
    """A `dspy.LM` whose calls are counted under optimizer/phase; kw overrides the defaults.

    Model "openai/<model>" selects DSPy's OpenAI-compatible chat route; the key
    is the gateway's per-run token (the real key, if any, stays in the gateway).
    """
    import dspy

    settings = endpoint.settings
    params: dict[str, Any] = {
        "model": f"openai/{settings.model}",
        "api_base": endpoint.base_url(optimizer, phase),
        "api_key": endpoint.api_key,
        "cache": False,
        "temperature": settings.temperature,
        "max_tokens": settings.limit_for("answer"),
        "num_retries": min(settings.max_retries, MAX_DSPY_RETRIES),
        "timeout": settings.timeout_s,
    }
    params.update(kw)
    if settings.transport == "respx":
        params["engine"] = "litellm"  # lm15's stdlib sockets cannot be routed by respx
        # Spelled as lm15 spells it (litellm would send `max_tokens`), so the request is the
        # same call whichever engine sent it: same fingerprint, same simulated answer.
        params["max_completion_tokens"] = params.pop("max_tokens")
        params["max_tokens"] = None
    return dspy.LM(**params)


@contextlib.contextmanager
def isolated_dspy_cache(run_dir: Path | None) -> Iterator[Path | None]:
    """Give DSPy a fresh cache under `run_dir/dspy_cache` (or no cache at all when None).

    Restores the previous cache (and DSPY_CACHEDIR) on exit. `dspy.cache` is
    process-global: two runs in threads of one process share whichever was
    set last, so run concurrent cases in separate processes (xdist).
    """
    import dspy

    cache_dir = None if run_dir is None else Path(run_dir) / CACHE_SUBDIR
    # Read the module dict, not `dspy.cache`: the attribute builds the default
    # ~/.dspy_cache on first access, which is what we are avoiding.
    previous = vars(dspy).get("cache")
    previous_env = os.environ.get("DSPY_CACHEDIR")
    if cache_dir is None:
        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    else:
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.environ["DSPY_CACHEDIR"] = str(cache_dir)
        dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True,
                             disk_cache_dir=str(cache_dir))
    ours = vars(dspy).get("cache")
    try:
        yield cache_dir
    finally:
        close = getattr(getattr(ours, "disk_cache", None), "close", None)
        if callable(close):
            close()  # release the sqlite files of this run's cache
        with dspy._cache_lock:
            if previous is None:
                vars(dspy).pop("cache", None)  # lazily rebuilt on next use, as before
            else:
                dspy.cache = previous
        if previous_env is None:
            os.environ.pop("DSPY_CACHEDIR", None)
        else:
            os.environ["DSPY_CACHEDIR"] = previous_env
