"""A running LM endpoint as the rest of the suite sees it.

All LM traffic of a run goes through one local gateway (simulated, or
forwarding to the real server), reached under a path that names the
optimizer and the phase. Counting at that one place is complete whatever the
client (dspy's own engine, litellm, openai, requests, aiohttp), which dspy's
`lm.history` and `track_usage` are not.
"""

from __future__ import annotations

from dataclasses import dataclass

from mipro_bench.lm.settings import LMSettings

GATEWAY_API_KEY = "mipro-bench-gateway"  # not a secret: the gateway holds the real key


@dataclass(frozen=True)
class LMEndpoint:
    settings: LMSettings
    gateway_url: str  # e.g. http://127.0.0.1:43121

    def base_url(self, optimizer: str, phase: str) -> str:
        """OpenAI-compatible base URL (ends in /v1) whose calls count for optimizer/phase."""
        return f"{self.gateway_url}/s/{optimizer}/{phase}/v1"

    @property
    def api_key(self) -> str:
        return GATEWAY_API_KEY
