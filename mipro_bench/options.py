"""The suite's run options, shared by the pytest plugin and the CLIs.

One dataclass carries what a run was asked for, so the seed CLIs (which
translate their earlier flags into these) and `pytest benchmarks/` mean the
same thing by every option.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipro_bench.data import ENV_DATA_DIR
from mipro_bench.lm.settings import DEFAULT_MODEL

DEFAULT_TRAIN_SIZE = 100
DEFAULT_VAL_SIZE = 50
DEFAULT_TEST_SIZE = 308  # 4 per intent: a stratified, paired panel
DEFAULT_RESULTS_DIR = Path("results")


@dataclass(frozen=True)
class BenchOptions:
    data_dir: Path | None = None
    train_size: int = DEFAULT_TRAIN_SIZE
    val_size: int = DEFAULT_VAL_SIZE
    test_size: int = DEFAULT_TEST_SIZE
    data_seed: int = 0
    lm: str | None = None
    api_base: str | None = None
    model: str = DEFAULT_MODEL
    results_dir: Path = DEFAULT_RESULTS_DIR
    # Which Synth backend the Synth path talks to: "local" (offline, in-process) or
    # "hosted" (Synth's API; the task app is then exposed through a Cloudflare tunnel).
    synth_backend: str = "local"

    @classmethod
    def from_pytest(cls, config: Any) -> BenchOptions:
        opt = config.getoption
        data_dir = opt("mipro_data_dir") or os.environ.get(ENV_DATA_DIR)
        return cls(
            data_dir=Path(data_dir) if data_dir else None,
            train_size=opt("mipro_train_size"),
            val_size=opt("mipro_val_size"),
            test_size=opt("mipro_test_size"),
            data_seed=opt("mipro_data_seed"),
            lm=opt("mipro_lm"),
            api_base=opt("mipro_api_base"),
            model=opt("mipro_model"),
            results_dir=Path(opt("mipro_results_dir")),
            synth_backend=opt("mipro_synth_backend", "local"),
        )


def add_pytest_options(parser: Any) -> None:
    """Register the --mipro-* options (called from the plugin's pytest_addoption)."""
    group = parser.getgroup("mipro-bench", "mipro-bench: prompt-optimizer benchmarks")
    group.addoption("--mipro-data-dir", default=None,
                    help=f"Banking77 directory (train.csv, test.csv, categories.json); "
                         f"default ${ENV_DATA_DIR}, else the Hugging Face hub")
    group.addoption("--mipro-train-size", type=int, default=DEFAULT_TRAIN_SIZE,
                    help="training examples (stratified by intent)")
    group.addoption("--mipro-val-size", type=int, default=DEFAULT_VAL_SIZE,
                    help="validation examples (stratified, disjoint from train)")
    group.addoption("--mipro-test-size", type=int, default=DEFAULT_TEST_SIZE,
                    help="held-out test examples scored by the suite itself")
    group.addoption("--mipro-data-seed", type=int, default=0,
                    help="seed of the data splits (the panel), separate from optimizer seeds")
    group.addoption("--mipro-lm", choices=("sim", "openai", "local"), default=None,
                    help="LM backend; default sim unless OPENAI_API_KEY or --mipro-api-base")
    group.addoption("--mipro-api-base", default=None,
                    help="any OpenAI-compatible server (vLLM, llama.cpp, Ollama)")
    group.addoption("--mipro-model", default=DEFAULT_MODEL, help="model for both optimizers")
    group.addoption("--mipro-results-dir", default=str(DEFAULT_RESULTS_DIR),
                    help="where result records and reports are written")
    group.addoption("--mipro-synth-backend", choices=("local", "hosted"), default="local",
                    help="Synth backend: local (offline, in-process; default) or hosted "
                         "(Synth's API, needs SYNTH_API_KEY; the task app is tunnelled)")
