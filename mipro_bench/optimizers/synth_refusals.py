"""Synth's hosted service refusing the suite's hosted path, each way as one line.

Why this exists: the hosted path is synth-ai 0.7.3 (the last release with MIPRO jobs and
task apps): `PolicyOptimizationJob` on `/api/policy-optimization/online/jobs`, the task app
behind a Cloudflare tunnel lease. synth-ai's later sources deprecate that job class (removal
announced for 2026-10-01) in favour of `PolicyOptimizationOfflineJob.create(kind=
"mipro_offline")` on `/api/v1/offline/jobs`, and refuse Cloudflare tunnel URLs (SynthTunnel
or Synth-managed tunnels only). So Synth's service may refuse this path today, and nothing
offline can tell. Whatever it refuses (the route, the tunnel, the key) or whatever stops the
tunnel from opening here, the user gets one line saying which, and that the local path runs
Synth's published MIPROv2 (`synth-optimizers`) on this machine, instead of the SDK's
multi-line messages. Anything else (a 500, a job that fails) stays an ordinary failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mipro_bench.optimizers.base import ServiceRefused

SUBMIT_ROUTE = "/api/policy-optimization/online/jobs"
NEWER_ROUTE = "/api/v1/offline/jobs"
LEASE_ROUTE = "/api/v1/tunnels/lease"
LOCAL_PATH = ("the local path runs Synth's published MIPROv2 (synth-optimizers) on this "
              "machine: --synth-backend local (pytest: --mipro-synth-backend local; "
              "run_synth_mipro_banking77.py: --local)")
ROUTE_GONE = (404, 410)
KEY_REJECTED = (401, 403)
BAD_REQUEST = (400, 422)
TUNNEL_WORDS = ("tunnel", "cloudflare", "synthtunnel")
BODY_CHARS = 160


class HostedRefused(ServiceRefused):
    """Synth's hosted service refused the job (route, tunnel or key), or the tunnel it needs
    could not be opened here: a complete line for the user, pointing at the local path."""


@dataclass(frozen=True)
class HttpAnswer:
    """What a service answered (status, body), as read back from a client's exception."""

    status: int
    body: str


# synth-ai 0.7.3's submit: "Job submission failed with status 404: <body>\n\nPossible causes...";
# its poll: "Prompt learning status failed: HTTP 404 <body>" (as the cause of "Polling failed").
_SDK_STATUS = re.compile(r"(?:with status|HTTP) (\d{3}):? ?(.*)", re.DOTALL)


def sdk_http_answer(exc: BaseException) -> HttpAnswer | None:
    """The HTTP status and body a synth-ai error carries, in `exc` or its causes: the SDK
    raises plain RuntimeErrors whose text is the only place the status survives."""
    seen: BaseException | None = exc
    for _ in range(5):  # the SDK wraps at most twice; never loop on a cycle
        if seen is None:
            return None
        status = getattr(seen, "status_code", None)  # synth-ai's TunnelAPIError
        if isinstance(status, int):
            return HttpAnswer(status, str(getattr(seen, "response_body", "") or ""))
        match = _SDK_STATUS.search(str(seen))
        if match:
            body = match.group(2).split("\n\nPossible causes")[0]
            return HttpAnswer(int(match.group(1)), body)
        seen = seen.__cause__ or seen.__context__
    return None


def _snippet(body: str) -> str:
    text = " ".join(body.split())
    return text if len(text) <= BODY_CHARS else text[:BODY_CHARS - 3] + "..."


def _line(what: str) -> str:
    return f"{what}; {LOCAL_PATH}"


def refusal_line(answer: HttpAnswer, *, method: str, url: str,
                 tunnel_url: str | None = None) -> str | None:
    """One line for a refusal of `method url`, or None when `answer` is not one (a 5xx, a
    400 about something else: an ordinary failure, reported as it is)."""
    said = f"{method} {url} answered {answer.status}"
    body = _snippet(answer.body)
    if answer.status in ROUTE_GONE:
        return _line(f"Synth's hosted service refused synth-ai 0.7.3's route: {said} (route "
                     f"gone; Synth's current API takes MIPRO jobs at {NEWER_ROUTE}, which "
                     "synth-ai 0.7.3 cannot use)")
    if answer.status in KEY_REJECTED:
        return _line(f"Synth's hosted service rejected SYNTH_API_KEY: {said}"
                     + (f" ({body})" if body else ""))
    if answer.status in BAD_REQUEST and any(w in answer.body.lower() for w in TUNNEL_WORDS):
        where = f" {tunnel_url}" if tunnel_url else ""
        return _line(f"Synth's hosted service refused the task app's Cloudflare tunnel URL"
                     f"{where}: {said} ({body}); it takes SynthTunnel or Synth-managed "
                     "tunnels only, which synth-ai 0.7.3 cannot open")
    return None


def submit_refusal(exc: BaseException, backend_url: str, tunnel_url: str) -> str | None:
    """The line for a refused `submit()`, or None when the submit failed some other way."""
    answer = sdk_http_answer(exc)
    if answer is None:
        return None
    return refusal_line(answer, method="POST", url=f"{backend_url}{SUBMIT_ROUTE}",
                        tunnel_url=tunnel_url)


def poll_refusal(exc: BaseException, backend_url: str, job_id: str) -> str | None:
    """The line for a refused poll (the SDK gives up after 5 errors; the status is in the
    cause), or None when polling failed some other way."""
    answer = sdk_http_answer(exc)
    if answer is None:
        return None
    return refusal_line(answer, method="GET", url=f"{backend_url}{SUBMIT_ROUTE}/{job_id}")


def tunnel_failure_line(exc: BaseException, tunnel: str, backend_url: str | None) -> str:
    """The line for a Cloudflare tunnel that did not open: the lease refused (route gone, key
    rejected) or cloudflared missing here. Always a line: without its tunnel the hosted
    path cannot run at all."""
    lease_url = f"{backend_url or ''}{LEASE_ROUTE}"
    if type(exc).__name__ == "LeaseNotFoundError":  # synth-ai's name for a 404 on any lease call
        answer: HttpAnswer | None = HttpAnswer(404, "")
    else:
        answer = sdk_http_answer(exc)
    if answer is not None:
        line = refusal_line(answer, method="POST", url=lease_url)
        if line is not None:
            return line
    reason = " ".join(str(getattr(exc, "message", "") or exc).split()) or type(exc).__name__
    return _line(f"could not open the {tunnel} tunnel the hosted path needs "
                 f"({type(exc).__name__}: {_snippet(reason)})")
