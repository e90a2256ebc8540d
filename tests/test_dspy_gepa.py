"""DSPy GEPA without an LM: spec, budget and options parsing, the plan, the feedback metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mipro_bench.data import load_banking77, make_splits
from mipro_bench.lm.endpoint import LMEndpoint
from mipro_bench.optimizers import create_optimizer, get_spec, registry
from mipro_bench.optimizers.base import NotSupported, OptimizeRequest, UsageError
from mipro_bench.optimizers.dspy_gepa import (
    DEFAULT_METRIC_CALLS,
    FEWSHOT_REASON,
    DSPyGEPA,
    GepaBudget,
    GepaOptions,
    make_feedback_metric,
    plan_gepa,
)

LABELS = ("card_arrival", "exchange_rate", "card_payment_wrong_exchange_rate", "pin_blocked")


def budget(**values: Any) -> GepaBudget:
    return get_spec("dspy_gepa").parse_budget(values)  # type: ignore[return-value]


def test_spec_is_registered_instruction_only_with_the_fewshot_reason() -> None:
    spec = registry()["dspy_gepa"]
    assert (spec.name, spec.slug, spec.title) == ("dspy_gepa", "dspy_gepa", "DSPy GEPA")
    assert spec.modes == frozenset({"instruction_only"})
    assert spec.unsupported_reason("fewshot") == FEWSHOT_REASON
    assert spec.native_executor == "dspy_program"
    assert spec.concurrency_options == ("num_threads",)
    assert (spec.concurrency_flag, spec.only_flag) == ("gepa-threads", "gepa-only")
    assert [(c.flag, c.knob) for c in spec.cli_shortcuts] == [("metric-calls", "max_metric_calls")]
    assert isinstance(create_optimizer("dspy_gepa"), DSPyGEPA)
    assert DSPyGEPA.spec is spec


@pytest.mark.parametrize(("values", "message"), [
    ({"max_metric_calls": 100, "auto": "light"},
     "give exactly one of max_metric_calls, max_full_evals, auto (got max_metric_calls and auto)"),
    ({"max_full_evals": 2, "max_metric_calls": 10}, "give exactly one of"),
    ({"auto": "huge"}, "auto must be one of light, medium, heavy, got 'huge'"),
    ({"max_metric_calls": 0}, "max_metric_calls must be at least 1, got 0"),
    ({"max_full_evals": -1}, "max_full_evals must be >= 0, got -1"),
    ({"max_metric_calls": "many"}, "max_metric_calls = 'many' is not valid"),
    ({"trials": 5}, "unknown key(s) trials; known: max_metric_calls, max_full_evals, auto"),
])
def test_budget_errors_are_one_line(values: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as err:
        budget(**values)
    text = str(err.value)
    assert "\n" not in text and message in text and text.startswith("[budget.dspy_gepa]")


@pytest.mark.parametrize(("values", "message"), [
    ({"module": "react"}, "module = 'react' is not valid"),
    ({"candidate_selection_strategy": "best"}, "candidate_selection_strategy = 'best'"),
    ({"num_threads": 0}, "num_threads must be at least 1, got 0"),
    ({"reflection_minibatch_size": 0}, "reflection_minibatch_size must be at least 1"),
    ({"use_merge": "yes"}, "use_merge = 'yes' is not valid (expected bool)"),
    ({"reflection_max_tokens": 0}, "reflection_max_tokens must be at least 1"),
    ({"temperature": 1.0}, "unknown key(s) temperature"),
])
def test_option_errors_are_one_line(values: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as err:
        get_spec("dspy_gepa").parse_options(values)
    assert "\n" not in str(err.value) and message in str(err.value)


def test_plan_defaults_and_passes_the_seed_through() -> None:
    plan = plan_gepa(GepaBudget(), "instruction_only", train_size=100, val_size=50, seed=0)
    assert plan.max_metric_calls == DEFAULT_METRIC_CALLS and plan.auto is None
    # GEPA seeds random.Random(seed) itself: 0 is a real seed, not "unset".
    assert (plan.requested_seed, plan.effective_seed) == (0, 0)
    auto = plan_gepa(budget(auto="light"), "instruction_only", train_size=100, val_size=50, seed=3)
    assert auto.init_kwargs() == {"max_metric_calls": None, "max_full_evals": None,
                                  "auto": "light", "reflection_minibatch_size": 3, "seed": 3}


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"mode": "fewshot"}, NotSupported, FEWSHOT_REASON),
    ({"budget": GepaBudget(max_metric_calls=10)}, UsageError, "below one val evaluation (50)"),
    ({"seed": -1}, UsageError, "--seed must be >= 0"),
    ({"reflection_minibatch_size": 200}, UsageError, "larger than the train split (100)"),
])
def test_plan_refuses_what_gepa_cannot_run(kwargs: dict[str, Any], error: type[Exception],
                                           message: str) -> None:
    args: dict[str, Any] = {"budget": GepaBudget(), "mode": "instruction_only", "seed": 0,
                            "reflection_minibatch_size": 3, **kwargs}
    with pytest.raises(error) as err:
        plan_gepa(args.pop("budget"), args.pop("mode"), train_size=100, val_size=50, **args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_check_refuses_fewshot_with_the_reason(tiny_data_dir: Path, tmp_path: Path) -> None:
    splits = make_splits(load_banking77(tiny_data_dir), train_size=12, val_size=6, test_size=12,
                         seed=0)
    endpoint = LMEndpoint.__new__(LMEndpoint)  # never used: check() makes no LM call
    request = OptimizeRequest(splits=splits, lm=endpoint, mode="fewshot", budget=GepaBudget(),
                              seed=0, workdir=tmp_path, scope="x")
    with pytest.raises(NotSupported, match="evolves instructions only"):
        DSPyGEPA(GepaOptions()).check(request)


# --- the feedback metric -------------------------------------------------------------------


def judge(answer: Any, expected: str = "exchange_rate") -> tuple[float, str]:
    import dspy

    metric = make_feedback_metric(LABELS)
    gold = dspy.Example(query="q", intent=expected).with_inputs("query")
    out = metric(gold, dspy.Prediction(intent=answer), None, "self", None)
    assert isinstance(out, dspy.Prediction)
    return out.score, out.feedback


def test_metric_takes_gepas_five_arguments() -> None:
    import inspect

    inspect.signature(make_feedback_metric(LABELS)).bind(None, None, None, None, None)


def test_feedback_for_a_correct_answer_names_the_intent() -> None:
    assert judge("Exchange rate") == (
        1.0, "Correct: the answer names the expected intent exchange_rate.")


def test_feedback_for_a_wrong_intent_names_expected_and_predicted() -> None:
    score, feedback = judge("card_arrival")
    assert score == 0.0
    assert feedback == ("Wrong: the expected intent is exchange_rate, but the answer named "
                        "card_arrival.")


@pytest.mark.parametrize(("answer", "said"), [
    ("I cannot tell", "it said 'I cannot tell'"),
    (None, "it was empty"),
    ("   ", "it was empty"),
    ("exchange_rate or pin_blocked", "it named several intents (exchange_rate, pin_blocked)"),
    ("x" * 200, "it said '" + "x" * 77 + "...'"),
])
def test_feedback_when_the_answer_names_no_intent(answer: Any, said: str) -> None:
    score, feedback = judge(answer)
    assert score == 0.0
    assert feedback.startswith("Wrong: the expected intent is exchange_rate, but the answer "
                               "named no intent of the list (")
    assert said in feedback


def test_the_score_follows_the_suites_label_rule() -> None:
    from mipro_bench.labels import map_to_label

    for answer in ("card_payment_wrong_exchange_rate", "exchange rate", "exchnge_rate",
                   "the exchange_rate one", "pin blocked"):
        expected = map_to_label(answer, LABELS) == "exchange_rate"
        assert judge(answer)[0] == float(expected)
