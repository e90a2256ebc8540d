"""Before any case: one one-token completion, straight to the run's upstream LM.

A rejected key, an unknown model, a refused connection or a server that does not answer
otherwise shows up minutes into a run as failed baseline items (measured, issue 21: about 5
minutes per case with a rejected key, 200 s of "0 calls" with a dead server). The check
sends the request the cases will send in its smallest form, without the gateway (so it is
never journaled, recorded or counted in a case), and turns each way it can fail into one
line naming the cause. Anything that shows the server is up and takes the key (a 2xx, a
429, a 400 about a parameter) passes: the gateway's own downgrades and retries handle those.
"""

from __future__ import annotations

import json
from urllib.parse import urlparse

import httpx

from mipro_bench.lm.settings import LMSettings

TIMEOUT_S = 8.0
CONNECT_TIMEOUT_S = 4.0
_MODEL_WORDS = ("model",)
_UNKNOWN_WORDS = ("not found", "does not exist", "unknown", "invalid model", "no such",
                  "not exist", "unsupported model")


class PreflightFailed(RuntimeError):
    """The upstream LM cannot serve this run (its message is the one line for the user)."""


def _message(response: httpx.Response) -> str:
    """The error message an OpenAI-compatible server put in its body, cut to one line."""
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        text = response.text
    else:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            text = str(error.get("message") or error)
        elif isinstance(body, dict) and body.get("detail"):
            text = str(body["detail"])
        else:
            text = str(error or body)
    return " ".join(text.split())[:200]


def _about_an_unknown_model(message: str) -> bool:
    low = message.lower()
    return any(w in low for w in _MODEL_WORDS) and any(w in low for w in _UNKNOWN_WORDS)


def check_endpoint(settings: LMSettings, *, timeout_s: float = TIMEOUT_S) -> None:
    """PreflightFailed (one line) unless `settings`' upstream answers a one-token completion
    for `settings.model` with `settings`' key; nothing to check without an upstream URL."""
    if not settings.base_url:
        return
    base = settings.base_url.rstrip("/")
    key = settings.api_key()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": settings.model, "max_tokens": 1, "temperature": 0,
            "messages": [{"role": "user", "content": "Reply with OK."}]}
    loopback = (urlparse(base).hostname or "") in ("127.0.0.1", "localhost", "::1")
    where = f"the LM server at {base}"
    try:
        response = httpx.post(f"{base}/chat/completions", json=body, headers=headers,
                              timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S,
                                                                         timeout_s)),
                              trust_env=not loopback)
    except httpx.ConnectError as exc:
        raise PreflightFailed(f"{where} refused the connection or cannot be reached "
                              f"({' '.join(str(exc).split())[:160]}); is it running?") from None
    except httpx.TimeoutException:
        raise PreflightFailed(f"{where} did not answer a one-token test completion within "
                              f"{timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise PreflightFailed(f"{where} failed a one-token test completion: "
                              f"{type(exc).__name__}: {exc}") from None
    status = response.status_code
    if status < 400 or status == 429:
        return
    message = _message(response)
    if status in (401, 403):
        named = f" (${settings.api_key_env})" if settings.api_key_env else ""
        raise PreflightFailed(f"{where} rejected the API key{named}: HTTP {status}: {message}")
    if status == 404 or (status in (400, 422) and _about_an_unknown_model(message)):
        raise PreflightFailed(f"{where} does not serve model {settings.model!r}: HTTP {status}: "
                              f"{message} (check --model)")
    if status >= 500:
        raise PreflightFailed(f"{where} answered a one-token test completion with HTTP "
                              f"{status}: {message}")
    # Any other 4xx (a parameter the server refuses): it is up and takes the key; the
    # gateway adapts request shapes itself.
