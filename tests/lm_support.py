"""The simulated LM behind a real local gateway, and a recorder of what the LM itself answered.

Nothing here fakes the LM: the gateway and its simulated policy are the real
ones; `RecordingResponder` only wraps the responder so a test can see the
request bodies the LM answered (and how many), independent of the gateway's
own usage ledger.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any

from mipro_bench.lm.backends import resolve_lm_settings
from mipro_bench.lm.gateway import GatewayHandle, start_gateway


@contextlib.contextmanager
def sim_gateway(*, format_drift: bool = True) -> Iterator[GatewayHandle]:
    """A gateway on the simulated LM, with the settings a run without keys resolves to
    (started for testing: its knobs may be changed over HTTP too).

    `format_drift=False`: the simulated LM writes every answer as the label, exactly
    (`SimulatedLM(format_drift=False)`), for tests of plumbing and classification, not of
    how a prompt's format discipline is scored. The gateway offers no switch for it, so the
    responder's policy class is swapped here (kept across malformed-rate knob changes)."""
    settings, _ = resolve_lm_settings(env={})
    with start_gateway(settings, testing=True) as handle:
        if not format_drift:
            _without_format_drift(handle.gateway.responder)
        yield handle


def _without_format_drift(responder: Any) -> None:
    from mipro_bench.offline.sim import SimulatedLM
    from mipro_bench.offline.sim_responder import SimResponder

    assert isinstance(responder, SimResponder), type(responder)
    assert isinstance(responder._policy, SimulatedLM), type(responder._policy)
    responder._cls = functools.partial(SimulatedLM, format_drift=False)
    responder._policy = responder._cls(seed=responder._seed,
                                       malformed_rate=responder._malformed_rate)
    assert responder._policy.format_drift is False


class RecordingResponder:
    """Wraps the gateway's responder: every request body the LM itself answered."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    async def complete(self, body: dict[str, Any]) -> Any:
        reply = await self.inner.complete(body)
        with self._lock:
            self.bodies.append(body)
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def calls(self) -> int:
        """How many calls the LM answered."""
        with self._lock:
            return len(self.bodies)

    def policy_systems(self) -> list[str]:
        """System messages of the classification calls (the ones with the forced tool; Synth's
        proposer turns carry tools too, and are left out)."""
        from mipro_bench.lm.call_kind import call_kind

        with self._lock:
            return [b["messages"][0]["content"] for b in self.bodies
                    if b.get("tools") and call_kind(b) == "tool_call"]

    def proposer_turns(self) -> list[dict[str, Any]]:
        """Bodies of Synth's proposer turns (native tools, among them add_instruction_*)."""
        from mipro_bench.lm.call_kind import call_kind

        with self._lock:
            return [b for b in self.bodies if b.get("tools") and call_kind(b) == "proposer"]


@contextlib.contextmanager
def recording_gateway(*, format_drift: bool = True
                      ) -> Iterator[tuple[GatewayHandle, RecordingResponder]]:
    """A simulated-LM gateway whose responder records what it answered."""
    with sim_gateway(format_drift=format_drift) as handle:
        recorder = RecordingResponder(handle.gateway.responder)
        handle.gateway.responder = recorder
        yield handle, recorder


class CountingUpstream:
    """A tiny real OpenAI-like HTTP server (stdlib, its own thread) that counts what reaches
    it and answers every chat call with one canned completion. Not our gateway app, so a
    test of the gateway's own checks cannot be fooled by sharing its code."""

    def __init__(self, *, reject_formats: dict[str, int] | None = None,
                 finish_reason: str = "stop") -> None:
        self.requests: list[dict[str, Any]] = []  # {"path", "headers", "body"} per request
        self._lock = threading.Lock()
        # response_format type -> the status it is refused with (llama-cpp-python's 500s
        # name the field, as real servers do)
        self.reject_formats = dict(reject_formats or {})
        self.finish_reason = finish_reason

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def handler(self) -> type:
        import json
        from http.server import BaseHTTPRequestHandler

        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                with upstream._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    upstream.requests.append({"path": self.path, "headers": headers,
                                              "body": raw})
                payload = json.loads(raw or b"{}")
                fmt = (payload.get("response_format") or {}).get("type")
                if fmt in upstream.reject_formats:
                    refusal = json.dumps({"error": {"message": (
                        "1 validation error for CreateChatCompletionRequest response_format."
                        f"type: Input should be 'text' or 'json_object' (got '{fmt}')")}}
                    ).encode()
                    self.send_response(upstream.reject_formats[fmt])
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(refusal)))
                    self.end_headers()
                    self.wfile.write(refusal)
                    return
                answer = json.dumps({
                    "id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
                    "model": payload.get("model", "m"),
                    "choices": [{"index": 0, "finish_reason": upstream.finish_reason, "message": {
                        "role": "assistant", "content": f"answer {upstream.count}"}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 3,
                              "total_tokens": 14}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


@contextlib.contextmanager
def counting_upstream(**options: Any) -> Iterator[tuple[str, CountingUpstream]]:
    """(base URL ending in /v1, the counter) of a CountingUpstream served on 127.0.0.1
    (`options`: CountingUpstream's)."""
    from http.server import ThreadingHTTPServer

    upstream = CountingUpstream(**options)
    server = ThreadingHTTPServer(("127.0.0.1", 0), upstream.handler())
    thread = threading.Thread(target=server.serve_forever, name="counting-upstream",
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", upstream
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
