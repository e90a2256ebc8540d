"""Root conftest: wires the session fixtures for tests/ and benchmarks/."""


