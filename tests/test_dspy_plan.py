"""How a budget becomes MIPROv2 arguments (no LM needed): trials, auto, demos, minibatch, seed."""

from __future__ import annotations

import pytest

from mipro_bench.optimizers import UnknownOptimizer, get_spec, registry
from mipro_bench.optimizers.base import UsageError
from mipro_bench.optimizers.dspy_mipro import (
    DEFAULT_TRIALS,
    DSPyMIPROv2,
    MiproBudget,
    MiproOptions,
    count_search_trials,
    plan_mipro,
)


def test_trials_really_set_num_trials_with_auto_off() -> None:
    plan = plan_mipro(MiproBudget(trials=5), "instruction_only", val_size=3, seed=1)
    assert plan.num_trials == 5 and plan.auto is None
    assert plan.num_candidates is not None and plan.num_candidates >= 3
    assert plan.compile_kwargs()["num_trials"] == 5
    assert plan.init_kwargs()["auto"] is None


def test_no_budget_means_the_earlier_default_of_20_trials() -> None:
    assert plan_mipro(MiproBudget(), "fewshot", val_size=50, seed=1).num_trials == DEFAULT_TRIALS


def test_auto_preset_leaves_trials_and_candidates_to_dspy() -> None:
    plan = plan_mipro(MiproBudget(auto="light"), "instruction_only", val_size=50, seed=1)
    assert (plan.auto, plan.num_trials, plan.num_candidates) == ("light", None, None)


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        (MiproBudget(trials=5, auto="light"), "not both"),
        (MiproBudget(auto="huge"), "--auto must be one of"),
        (MiproBudget(auto="light", num_candidates=6), "set by the --auto preset"),
        (MiproBudget(trials=0), "--trials must be at least 1"),
        (MiproBudget(trials=5, num_candidates=1), "num_candidates must be at least 3"),
    ],
)
def test_contradictory_budgets_are_usage_errors(budget: MiproBudget, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        plan_mipro(budget, "instruction_only", val_size=10, seed=1)


def test_instruction_only_never_asks_for_demos() -> None:
    budget = MiproBudget(trials=5, max_bootstrapped_demos=4, max_labeled_demos=4)
    io = plan_mipro(budget, "instruction_only", val_size=10, seed=1)
    fs = plan_mipro(budget, "fewshot", val_size=10, seed=1)
    assert (io.max_bootstrapped_demos, io.max_labeled_demos) == (0, 0)
    assert (fs.max_bootstrapped_demos, fs.max_labeled_demos) == (4, 4)


@pytest.mark.parametrize(("val", "minibatch_size", "expect"), [
    (3, None, (False, 3)),      # tiny valset: a full evaluation per trial
    (50, None, (False, 35)),    # DSPy's own threshold: minibatch only above 50
    (120, None, (True, 35)),
    (40, 10, (True, 10)),       # explicit size below the valset: minibatch
    (5, 10, (False, 5)),        # explicit size above the valset: clamped, no minibatch
])
def test_minibatch_never_exceeds_the_valset(val: int, minibatch_size: int | None,
                                            expect: tuple[bool, int]) -> None:
    plan = plan_mipro(MiproBudget(trials=4, minibatch_size=minibatch_size), "instruction_only",
                      val_size=val, seed=1)
    assert (plan.minibatch, plan.minibatch_size) == expect
    assert plan.minibatch_size <= val


def test_seed_zero_becomes_a_nonzero_seed_and_both_are_kept() -> None:
    zero = plan_mipro(MiproBudget(trials=3), "instruction_only", val_size=3, seed=0)
    one = plan_mipro(MiproBudget(trials=3), "instruction_only", val_size=3, seed=1)
    assert (zero.requested_seed, zero.effective_seed) == (0, 1)
    assert one.effective_seed == 2  # distinct seeds stay distinct
    assert zero.compile_kwargs()["seed"] == zero.init_kwargs()["seed"] == 1
    with pytest.raises(UsageError, match="--seed must be >= 0"):
        plan_mipro(MiproBudget(trials=3), "instruction_only", val_size=3, seed=-1)


def test_trial_count_comes_from_the_logged_parameter_choices() -> None:
    logs = {
        1: {"full_eval_score": 40.0, "total_eval_calls_so_far": 3},  # default program
        2: {"0_predictor_instruction": 1, "full_eval_score": 50.0},
        3: {"0_predictor_instruction": 0, "0_predictor_demos": 2, "mb_score": 60.0},
        4: {"full_eval_score": 55.0},  # a periodic full evaluation picks nothing
    }
    assert count_search_trials(logs) == 2


def test_registry_matches_the_adapter_class() -> None:
    spec = get_spec("dspy_miprov2")
    cls = spec.load()
    assert cls is DSPyMIPROv2
    assert cls.spec is spec
    assert (spec.name, spec.slug, spec.modes) == (
        "dspy_miprov2", "dspy_mipro", frozenset({"instruction_only", "fewshot"}))
    assert (spec.budget_type, spec.options_type) == (MiproBudget, MiproOptions)
    assert spec.native_executor == "dspy_program"
    assert "synth_mipro" in registry() and not registry()["synth_mipro"].supports("fewshot")
    with pytest.raises(UnknownOptimizer, match=r"known: (\w+, )*dspy_miprov2"):
        get_spec("gepa")


def test_adapter_refuses_unknown_module() -> None:
    with pytest.raises(UsageError, match=r"module = 'react' is not valid .*'predict', 'cot'"):
        DSPyMIPROv2(module="react")
    with pytest.raises(UsageError, match="module must be one of"):  # the typed path checks too
        DSPyMIPROv2(MiproOptions(module="react"))  # type: ignore[arg-type]


def test_adapter_options_are_typed_and_take_both_spellings() -> None:
    assert DSPyMIPROv2(num_threads=2).options == DSPyMIPROv2(MiproOptions(num_threads=2)).options
    assert DSPyMIPROv2(num_threads=2).executor_options()["num_threads"] == 2
    with pytest.raises(UsageError, match=r"unknown key\(s\) max_item_error_rate"):
        DSPyMIPROv2(max_item_error_rate=0.1)  # the runner's policy now, not an option


def test_budget_for_mode_drops_demos_only_when_instruction_only() -> None:
    budget = MiproBudget(trials=4, max_bootstrapped_demos=3, max_labeled_demos=2)
    assert budget.for_mode("fewshot") == budget
    io = budget.for_mode("instruction_only")
    assert (io.trials, io.max_bootstrapped_demos, io.max_labeled_demos) == (4, 0, 0)
    assert MiproBudget(trials=4).for_mode("instruction_only") == MiproBudget(trials=4)
