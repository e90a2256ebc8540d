"""A toy LM backend, registered at test time from a throwaway dist-info
(tests/test_lm_backend_plugin.py), exactly as a third party's package would register one.

Its policy is honest to itself and nothing more: every answer is the first intent it can
see (a forced tool call's first enum value, else FIRST_LABEL), every DSPy output field is
filled with it, and every call is appended to $TOY_LM_LOG, so a test can tell that the
calls went through it.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from typing import Any

from mipro_bench.lm.backends import LMBackend, LMChoice
from mipro_bench.lm.responders import Reply, Responder
from mipro_bench.lm.retry import RetryPolicy
from mipro_bench.lm.settings import LMSettings

NAME = "toy"
FIRST_LABEL = "card_arrival"  # tests/data/tiny_banking77's first intent
LOG_ENV = "TOY_LM_LOG"
_OUTPUTS = re.compile(r"Your output fields are:\n(.*?)\n(?:All interactions|\n)", re.S)
_FIELD = re.compile(r"^\d+\. `(\w+)`", re.M)
_LOCK = threading.Lock()


def _message(body: dict[str, Any]) -> dict[str, Any]:
    tools = body.get("tools") or []
    if tools:
        function = tools[0]["function"]
        props = function["parameters"]["properties"]
        args = {name: (spec.get("enum") or [FIRST_LABEL])[0] for name, spec in props.items()}
        return {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_toy", "type": "function",
            "function": {"name": function["name"], "arguments": json.dumps(args)}}]}
    system = " ".join(str(m.get("content") or "") for m in body.get("messages", [])
                      if m.get("role") == "system")
    found = _OUTPUTS.search(system)
    fields = _FIELD.findall(found.group(1)) if found else ["answer"]
    content = "".join(f"[[ ## {f} ## ]]\n{FIRST_LABEL}\n\n" for f in fields)
    return {"role": "assistant", "content": content + "[[ ## completed ## ]]"}


class ToyResponder:
    simulated = True
    backend = NAME

    def __init__(self, model: str) -> None:
        self._model = model

    async def startup(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def complete(self, body: dict[str, Any]) -> Reply:
        log = os.environ.get(LOG_ENV)
        if log:
            with _LOCK, open(log, "a", encoding="utf-8") as out:
                out.write(json.dumps({"model": body.get("model")}) + "\n")
        return Reply(200, {
            "id": "toy", "object": "chat.completion", "created": int(time.time()),
            "model": self._model, "choices": [{"index": 0, "message": _message(body),
                                               "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    def cost_of(self, response: dict[str, Any]) -> float | None:
        return None

    def model_ids(self) -> list[str]:
        return [self._model]


class ToyBackend(LMBackend):
    name = NAME
    simulated = True

    def settings(self, choice: LMChoice) -> LMSettings:
        return LMSettings(backend=NAME, base_url=None, simulated=True, **choice.common)

    def describe(self, settings: LMSettings, choice: LMChoice) -> str:
        return f"LM: toy backend (always {FIRST_LABEL}) standing in for {settings.model}"

    def responder(self, settings: LMSettings, *, seed: int = 0,
                  retry: RetryPolicy | None = None) -> Responder:
        return ToyResponder(settings.model)


TOY = ToyBackend()
