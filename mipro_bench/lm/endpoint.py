"""A running LM endpoint as the rest of the suite sees it.

All LM traffic of a run goes through one local gateway (simulated, or
forwarding to the real server), reached under a path that names the
optimizer and the phase. Counting at that one place is complete whatever the
client (dspy's own engine, litellm, openai, requests, aiohttp), which dspy's
`lm.history` and `track_usage` are not.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from mipro_bench.lm.settings import LMSettings

if TYPE_CHECKING:
    from mipro_bench.results import PhaseUsage


@dataclass(frozen=True)
class LMEndpoint:
    settings: LMSettings
    gateway_url: str  # e.g. http://127.0.0.1:43121
    # The gateway's per-run token (see mipro_bench.lm.auth): every route wants it. Kept out
    # of repr so an endpoint in an error message or assertion never shows it.
    token: str = field(default="", repr=False)

    def base_url(self, optimizer: str, phase: str) -> str:
        """OpenAI-compatible base URL (ends in /v1) whose calls count for optimizer/phase."""
        return f"{self.gateway_url}/s/{optimizer}/{phase}/v1"

    @property
    def api_key(self) -> str:
        """What clients send as their API key: the gateway's token (the real key, if any,
        stays inside the gateway)."""
        return self.token

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def usage(self, optimizer: str | None = None, *, timeout_s: float = 10.0,
              ) -> dict[str, dict[str, PhaseUsage]]:
        """Usage counted so far by the gateway (GET /usage), for code that only has the
        endpoint (another process, an xdist worker): {optimizer: {phase: PhaseUsage}}."""
        from mipro_bench.lm.usage import usage_from_json

        params = {"optimizer": optimizer} if optimizer is not None else None
        response = _local_client().get(f"{self.gateway_url}/usage", params=params,
                                       headers=self.auth_headers, timeout=timeout_s)
        response.raise_for_status()
        return usage_from_json(response.json())


    def diagnostics(self, *, timeout_s: float = 10.0) -> dict[str, Any]:
        """The gateway's GET /diagnostics: token limits applied, request shapes downgraded."""
        response = _local_client().get(f"{self.gateway_url}/diagnostics",
                                       headers=self.auth_headers, timeout=timeout_s)
        response.raise_for_status()
        data = response.json()
        return data if isinstance(data, dict) else {}


@functools.cache
def _local_client() -> httpx.Client:
    """One pooled client for reading the local gateway: a new httpx client costs ~40 ms
    (SSL context), and proxy variables must not apply to 127.0.0.1 (trust_env=False)."""
    return httpx.Client(trust_env=False)
