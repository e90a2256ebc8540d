"""The deterministic simulated LM (offline default): a chat model that reads only the prompt.

`SimulatedLM.complete(body)` answers an OpenAI chat-completions body; the
gateway serves it over HTTP. See policy.py for the request shapes it knows.
"""

from mipro_bench.offline.sim.policy import SimRequestError, SimulatedLM

__all__ = ["SimRequestError", "SimulatedLM"]
