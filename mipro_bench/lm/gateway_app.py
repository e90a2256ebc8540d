"""The LM gateway as an ASGI app: routing, validation, fault knobs and usage accounting.

Every LM call of a run is sent here, under a path naming the optimizer and
the phase (`/s/{optimizer}/{phase}/v1/chat/completions`), so counting here is
complete whatever client made the call. The answer itself comes from a
responder (simulated policy or a forwarder to a real server), or from a
recording (see mipro_bench.lm.replay); every fingerprinted call is journaled
when a journal is on (mipro_bench.lm.journal). Every route wants the run's
token (mipro_bench.lm.auth). Bad input gets a 4xx with an OpenAI-style JSON
error, never a 500 or a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mipro_bench.lm.auth import TokenAuth
from mipro_bench.lm.call_kind import call_kind, capped, is_truncated
from mipro_bench.lm.fingerprint import request_fingerprint
from mipro_bench.lm.journal import JournalEntry, JournalWriter
from mipro_bench.lm.knobs import FaultInjector, Knobs, KnobsError
from mipro_bench.lm.replay import REPLAY_MODES, Occurrences, ReplayIndex, ReplayMode
from mipro_bench.lm.responders import (
    SIMULATED_FINGERPRINT,
    InvalidChatRequest,
    Reply,
    Responder,
    UpstreamFailure,
)
from mipro_bench.lm.usage import UNSCOPED, UsageLedger, usage_to_json

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
_SCOPE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:=+@-]{0,127}$")


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data, separators=(",", ":")).encode(), status_code=status,
                    media_type="application/json", headers=headers)


def _error_reply(status: int, message: str, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error": {"message": message, "type": kind, "code": status}},
                 headers or {})


def _error(status: int, message: str, kind: str = "invalid_request_error",
           headers: dict[str, str] | None = None) -> Response:
    reply = _error_reply(status, message, kind, headers)
    return _json(reply.body, reply.status, reply.headers)


def _response(reply: Reply) -> Response:
    return _json(reply.body, reply.status, reply.headers)


@dataclass(frozen=True)
class Counted:
    """The usage a call was counted with (what the journal stores beside the answer)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None


class Gateway:
    """State of one gateway: its responder, token, usage ledger, fault knobs, and the
    journal and recording it writes to and answers from (both optional)."""

    def __init__(self, responder: Responder, *, model: str, token: str,
                 knobs: Knobs | None = None, testing: bool = False,
                 journal: JournalWriter | None = None, replay: ReplayIndex | None = None,
                 replay_mode: ReplayMode = "resume",
                 token_limits: dict[str, int] | None = None) -> None:
        if replay_mode not in REPLAY_MODES:
            raise ValueError(f"replay_mode must be one of {REPLAY_MODES} (got {replay_mode!r})")
        self.responder = responder
        self.model = model
        self.token = token
        self.testing = testing
        self.journal = journal
        self.replay = replay
        self.replay_mode: ReplayMode = replay_mode
        self.occurrences = Occurrences()
        self.ledger = UsageLedger()
        # Completion-token limit per call kind (None: requests pass as sent).
        self.token_limits = dict(token_limits) if token_limits else None
        self.calls_capped: dict[str, int] = {}
        self.faults = FaultInjector(knobs)
        self._apply_policy_knobs(self.faults.knobs)

    def set_knobs(self, changes: dict[str, Any]) -> Knobs:
        knobs = self.faults.knobs.updated(changes)
        self._apply_policy_knobs(knobs)  # may refuse: then nothing has changed
        self.faults.set(knobs)
        return knobs

    def _apply_policy_knobs(self, knobs: Knobs) -> None:
        setter = getattr(self.responder, "set_malformed_rate", None)
        if setter is not None:
            setter(knobs.malformed_rate)
        elif knobs.malformed_rate:
            raise KnobsError("malformed_rate only applies to the simulated LM")

    # -- the chat route -------------------------------------------------------------------

    async def chat(self, request: Request, optimizer: str, phase: str) -> Response:
        # Timed here, server side, so a run can split its wall time into LM time and
        # harness time whatever client made the call (injected latency counts as LM time).
        started = self.ledger.started(optimizer, phase)
        try:
            reply = await self._chat(request, optimizer, phase, started)
        finally:
            self.ledger.finished(optimizer, phase, started)
        if reply.status != 200:
            self.ledger.record_error(optimizer, phase)
        return _response(reply)

    async def _chat(self, request: Request, optimizer: str, phase: str,
                    started: float) -> Reply:
        for what, name in (("optimizer", optimizer), ("phase", phase)):
            if not _SCOPE_NAME.match(name):
                return _error_reply(400, f"invalid {what} path segment {name!r}: use letters, "
                                         "digits and _ . : = + @ - (at most 128)")
        body, problem = await self._read_body(request)
        if problem is not None:
            return problem
        if self.journal is None and self.replay is None:
            return (await self._live(body, optimizer, phase))[0]  # nothing to fingerprint for
        fp, canonical = request_fingerprint(body)
        occurrence = self.occurrences.next(optimizer, fp)
        if self.replay is not None:
            entry = self.replay.get(optimizer, fp, occurrence)
            if entry is not None and (entry.ok or self.replay_mode == "replay"):
                reply = self._replayed(entry, optimizer, phase)
                counted = Counted(entry.input_tokens, entry.output_tokens, entry.cost_usd)
                self._journal(optimizer, phase, fp, occurrence, canonical, reply, counted,
                              started)
                return reply
            if self.replay_mode == "replay":
                miss = self.replay.explain_miss(optimizer, phase, fp, occurrence, canonical)
                return _error_reply(409, miss.message, "replay_mismatch")
        reply, usage = await self._live(body, optimizer, phase)
        self._journal(optimizer, phase, fp, occurrence, canonical, reply, usage, started)
        return reply

    async def _live(self, body: dict[str, Any], optimizer: str, phase: str,
                    ) -> tuple[Reply, Counted]:
        """The responder's answer (or an injected error); with the usage it was counted as."""
        knobs = self.faults.knobs
        injected = self.faults.draw_error()
        if injected is not None:
            if knobs.latency_s:
                await asyncio.sleep(knobs.latency_s)
            return self._injected_error(injected, knobs), Counted()
        if self.token_limits:
            kind = call_kind(body)
            limit = self.token_limits.get(kind, self.token_limits.get("answer"))
            if limit is not None:
                body, lowered = capped(body, limit, legacy_field=self.responder.backend
                                       not in ("openai", "sim"))
                if lowered:
                    self.calls_capped[kind] = self.calls_capped.get(kind, 0) + 1
        try:
            reply = await self.responder.complete(body)
        except InvalidChatRequest as exc:
            if exc.body is not None:
                return Reply(exc.status, exc.body), Counted()
            return _error_reply(exc.status, str(exc)), Counted()
        except UpstreamFailure as exc:
            self.ledger.record_retries(optimizer, phase, exc.attempts - 1)
            return _error_reply(502, str(exc), "upstream_error"), Counted()
        except Exception:
            # A bug in the policy, not the client's fault: say so plainly (no traceback out).
            log.exception("LM responder failed on a well-formed request")
            return _error_reply(500, "the LM gateway's responder failed on this request; "
                                     "see the gateway log", "server_error"), Counted()
        self.ledger.record_retries(optimizer, phase, reply.attempts - 1)
        return await self._account(reply, optimizer, phase, knobs)

    def _replayed(self, entry: JournalEntry, optimizer: str, phase: str) -> Reply:
        """The recorded answer, counted as a replayed call (no responder, no knobs)."""
        simulated = entry.response.get("system_fingerprint") == SIMULATED_FINGERPRINT
        if entry.ok:
            from mipro_bench.lm.pricing import estimate_usd

            estimate = estimate_usd(self.model, entry.input_tokens, entry.output_tokens) \
                if simulated else None
            self.ledger.record_call(optimizer, phase, input_tokens=entry.input_tokens,
                                    output_tokens=entry.output_tokens,
                                    cost_usd=entry.cost_usd, replayed=True,
                                    cost_usd_estimate=estimate,
                                    truncated=is_truncated(entry.response))
        headers = {"x-mipro-bench-replayed": "true"}
        if simulated:
            headers["x-mipro-bench-simulated"] = "true"
        return Reply(entry.status, entry.response, headers)

    def _journal(self, optimizer: str, phase: str, fp: str, occurrence: int,
                 canonical: dict[str, Any], reply: Reply, counted: Counted,
                 started: float) -> None:
        if self.journal is None:
            return
        self.journal.write(JournalEntry(
            scope=optimizer, phase=phase, fingerprint=fp, occurrence=occurrence,
            status=reply.status, response=reply.body, request=canonical,
            input_tokens=counted.input_tokens, output_tokens=counted.output_tokens,
            cost_usd=counted.cost_usd,
            latency_s=self.ledger.elapsed_since(started), at=time.time(),
            source="replayed" if "x-mipro-bench-replayed" in reply.headers else "live"))

    async def _read_body(self, request: Request) -> tuple[dict[str, Any], Reply | None]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return {}, _error_reply(413, f"request body over {MAX_BODY_BYTES} bytes")
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return {}, _error_reply(413, f"request body over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return {}, _error_reply(400, f"request body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return {}, _error_reply(400, "request body must be a JSON object (a chat-completions "
                                         "request)")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return {}, _error_reply(400, "'messages' must be a non-empty list")
        if not all(isinstance(m, dict) for m in messages):
            return {}, _error_reply(400, "every item of 'messages' must be an object")
        if body.get("stream"):
            return {}, _error_reply(400, "streaming is not supported by the mipro-bench LM "
                                         "gateway (send stream=false)")
        return body, None

    def _injected_error(self, status: int, knobs: Knobs) -> Reply:
        headers: dict[str, str] = {}
        if status == 429:
            kind, message = "rate_limit_error", "rate limit (injected by the mipro-bench gateway)"
            if knobs.retry_after_s is not None:
                value = knobs.retry_after_s
                headers["retry-after"] = str(int(value)) if value == int(value) else f"{value:g}"
                headers["retry-after-ms"] = str(int(value * 1000))
        else:
            kind, message = "server_error", (
                f"server error {status} (injected by the mipro-bench gateway)")
        return _error_reply(status, message, kind, headers)

    async def _account(self, reply: Reply, optimizer: str, phase: str,
                       knobs: Knobs) -> tuple[Reply, Counted]:
        usage = reply.body.get("usage") if isinstance(reply.body.get("usage"), dict) else {}
        input_tokens = _as_int(usage.get("prompt_tokens"))
        output_tokens = _as_int(usage.get("completion_tokens"))
        cost = self.responder.cost_of(reply.body)
        estimate_of = getattr(self.responder, "estimate_of", None)
        estimate = estimate_of(reply.body) if estimate_of is not None and cost is None else None
        self.ledger.record_call(optimizer, phase, input_tokens=input_tokens,
                                output_tokens=output_tokens, cost_usd=cost,
                                cost_usd_estimate=estimate, truncated=is_truncated(reply.body))
        delay = knobs.latency_s + knobs.latency_per_output_token_s * output_tokens
        if delay > 0:
            await asyncio.sleep(delay)
        return reply, Counted(input_tokens, output_tokens, cost)

    # -- the other routes ---------------------------------------------------------------

    def models(self) -> Response:
        owner = SIMULATED_FINGERPRINT if self.responder.simulated else self.responder.backend
        return _json({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": owner}
            for m in self.responder.model_ids()
        ]})

    def diagnostics(self) -> dict[str, Any]:
        """What the gateway did to requests this session: the token limits it applied (and
        how often it lowered a client's own), and the request shapes it downgraded because
        the server rejected them (the forwarder's record; none for other responders)."""
        downgrades = getattr(self.responder, "downgrades", None)
        return {"token_limits": self.token_limits, "calls_capped": dict(self.calls_capped),
                "request_downgrades": downgrades() if callable(downgrades) else []}

    def health(self) -> Response:
        return _json({"status": "ok", "simulated": self.responder.simulated,
                      "backend": self.responder.backend, "model": self.model})


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def build_app(gateway: Gateway) -> TokenAuth:
    """The app serving `gateway` behind its token check (responder started and stopped with
    the app, journal closed when it stops)."""

    async def chat_unscoped(request: Request) -> Response:
        return await gateway.chat(request, UNSCOPED, UNSCOPED)

    async def chat_scoped(request: Request) -> Response:
        p = request.path_params
        return await gateway.chat(request, p["optimizer"], p["phase"])

    async def models(request: Request) -> Response:
        return gateway.models()

    async def health(request: Request) -> Response:
        return gateway.health()

    async def diagnostics(request: Request) -> Response:
        return _json(gateway.diagnostics())

    async def usage(request: Request) -> Response:
        return _json(usage_to_json(gateway.ledger.snapshot(request.query_params.get("optimizer"))))

    async def usage_reset(request: Request) -> Response:
        gateway.ledger.reset(request.query_params.get("optimizer"))
        return _json({"status": "reset"})

    async def knobs(request: Request) -> Response:
        if request.method == "GET":
            return _json(gateway.faults.knobs.to_dict())
        if not gateway.testing:
            return _error(403, "knob changes over HTTP are only accepted by a gateway started "
                               "for testing (start_gateway(..., testing=True))", "permission_error")
        try:
            changes = json.loads(await request.body() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, f"knobs body is not valid JSON: {exc}")
        if not isinstance(changes, dict):
            return _error(400, "knobs body must be a JSON object of knob: value")
        try:
            return _json(gateway.set_knobs(changes).to_dict())
        except (KnobsError, TypeError) as exc:
            return _error(400, str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}",
                      "not_found" if exc.status_code == 404 else "invalid_request_error")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.responder.startup()
        try:
            yield
        finally:
            await gateway.responder.shutdown()
            if gateway.journal is not None:
                gateway.journal.close()

    routes = [
        Route("/v1/chat/completions", chat_unscoped, methods=["POST"]),
        Route("/s/{optimizer}/{phase}/v1/chat/completions", chat_scoped, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/s/{optimizer}/{phase}/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/usage", usage, methods=["GET"]),
        Route("/diagnostics", diagnostics, methods=["GET"]),
        Route("/usage/reset", usage_reset, methods=["POST"]),
        Route("/admin/knobs", knobs, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error})
    return TokenAuth(app, token=gateway.token)
