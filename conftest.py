"""Root conftest: wires the session fixtures for tests/ and benchmarks/."""

pytest_plugins = ["fixtures.data", "fixtures.lm", "fixtures.servers"]
