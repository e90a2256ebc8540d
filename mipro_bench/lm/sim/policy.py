"""Placeholder: the simulated LM policy (being written for the LM-layer issue).

Interface contract (do not change without updating callers):

    class SimulatedLM:
        def __init__(self, *, seed: int = 0, malformed_rate: float = 0.0) -> None: ...
        def complete(self, body: dict) -> dict:
            '''An OpenAI chat.completion response dict (with "usage") for an
            OpenAI chat-completions request body.'''
"""
