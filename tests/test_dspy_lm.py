"""DSPy through the gateway: real dspy.Predict / Evaluate on the simulated LM, cache isolation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import dspy
import pytest

from mipro_bench.lm.dspy_lm import CACHE_SUBDIR, isolated_dspy_cache, make_dspy_lm
from mipro_bench.lm.gateway import GatewayHandle

Intent = Literal["card_arrival", "exchange_rate", "lost_or_stolen_card", "card_linking"]
QUERIES = [
    "when will my new card arrive in the mail",
    "what exchange rate do you use for euros",
    "someone stole my card, block it",
    "how do I link my card to the app",
    "my card still has not arrived",
    "is the exchange rate better on weekdays",
    "I lost my card yesterday",
    "can I link a second card",
]


class Classify(dspy.Signature):
    """Classify the customer's banking query into exactly one intent."""

    query: str = dspy.InputField()
    intent: Intent = dspy.OutputField()


@pytest.fixture(scope="module")
def gw() -> Iterator[GatewayHandle]:
    """The module's gateway writes every answer as a label: these tests are about DSPy's
    plumbing through the gateway, and a drifted answer ("card_arrival or card_linking",
    a paraphrase) is not a valid `Intent`, so DSPy would raise on the Literal."""
    from tests.lm_support import sim_gateway

    with sim_gateway(format_drift=False) as handle:
        yield handle


@pytest.fixture(autouse=True)
def fresh(gw: GatewayHandle) -> Iterator[None]:
    gw.reset_usage()
    gw.set_knobs(fail_next=0, error_rate=0.0)
    with isolated_dspy_cache(None):  # no test may hit a cache another one filled
        yield


def test_make_dspy_lm_points_at_the_scoped_gateway(gw: GatewayHandle) -> None:
    lm = make_dspy_lm(gw.endpoint, "dspy-s0", "optimize")
    assert lm.model == "openai/gpt-4.1-nano"
    assert lm.kwargs["api_base"] == f"{gw.url}/s/dspy-s0/optimize/v1"
    assert lm.kwargs["api_key"] == gw.token  # the gateway's per-run token, never a real key
    assert lm.cache is False
    assert lm.kwargs["temperature"] == 0.0
    assert lm.num_retries <= 3
    override = make_dspy_lm(gw.endpoint, "d", "p", num_retries=0, temperature=0.7)
    assert override.num_retries == 0
    assert override.kwargs["temperature"] == 0.7


def test_litellm_never_fetches_prices() -> None:
    assert os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP") == "True"


@pytest.mark.parametrize("engine", ["auto", "litellm"])
def test_predict_reaches_the_gateway(gw: GatewayHandle, engine: str) -> None:
    lm = make_dspy_lm(gw.endpoint, "dspy", "baseline_eval", engine=engine)
    with dspy.context(lm=lm):
        prediction = dspy.Predict(Classify)(query="my card has not arrived yet")
    assert prediction.intent in Intent.__args__
    usage = gw.usage("dspy")["dspy"]["baseline_eval"]
    assert usage.calls == 1
    assert usage.input_tokens > 0
    assert usage.cost_usd is None


def test_threaded_evaluate_counts_every_item(gw: GatewayHandle) -> None:
    # Gold is the simulated LM's own (sequential) answer on even items and another intent on
    # odd ones, so a metric that really compares intents scores exactly 50 whatever the LM's
    # quality, and each item's verdict must land on that item under 4 threads.
    with dspy.context(lm=make_dspy_lm(gw.endpoint, "dspy-ref", "test_eval")):
        reference = [dspy.Predict(Classify)(query=q).intent for q in QUERIES]
    others = {i: next(x for x in Intent.__args__ if x != reference[i]) for i in range(len(QUERIES))}
    gold = [reference[i] if i % 2 == 0 else others[i] for i in range(len(QUERIES))]
    devset = [dspy.Example(query=q, intent=g).with_inputs("query")
              for q, g in zip(QUERIES, gold, strict=True)]
    lm = make_dspy_lm(gw.endpoint, "dspy-eval", "test_eval")
    evaluate = dspy.Evaluate(devset=devset,
                             metric=lambda ex, pred, trace=None: pred.intent == ex.intent,
                             num_threads=4, display_progress=False, provide_traceback=True)
    with dspy.context(lm=lm):
        result = evaluate(dspy.Predict(Classify))
    assert result.score == 50.0
    assert [bool(score) for _, _, score in result.results] == [True, False] * 4
    assert gw.usage("dspy-eval")["dspy-eval"]["test_eval"].calls == len(devset)


def test_parallel_counts_every_item(gw: GatewayHandle) -> None:
    lm = make_dspy_lm(gw.endpoint, "dspy-par", "optimize")
    predict = dspy.Predict(Classify)
    with dspy.context(lm=lm):
        outputs = dspy.Parallel(num_threads=4)([(predict, {"query": q}) for q in QUERIES * 2])
    assert len(outputs) == 2 * len(QUERIES)
    assert gw.usage("dspy-par")["dspy-par"]["optimize"].calls == 2 * len(QUERIES)


def test_dspy_retries_a_429_through_the_gateway(gw: GatewayHandle) -> None:
    gw.set_knobs(fail_next=1, error_status=429, retry_after_s=0.05)
    lm = make_dspy_lm(gw.endpoint, "dspy-retry", "optimize")
    with dspy.context(lm=lm):
        prediction = dspy.Predict(Classify)(query="what is the exchange rate")
    assert prediction.intent in Intent.__args__
    usage = gw.usage("dspy-retry")["dspy-retry"]["optimize"]
    assert (usage.calls, usage.errors) == (1, 1)


def test_run_cache_is_isolated_and_does_not_leak(gw: GatewayHandle, tmp_path: Path) -> None:
    def ask(lm: dspy.LM) -> None:
        with dspy.context(lm=lm):
            dspy.Predict(Classify)(query="my card is lost")

    calls = lambda: gw.usage("cache").get("cache", {}).get("p", None)  # noqa: E731
    cached_lm = make_dspy_lm(gw.endpoint, "cache", "p", cache=True)
    with isolated_dspy_cache(tmp_path / "run1") as cache_dir:
        assert cache_dir == tmp_path / "run1" / CACHE_SUBDIR
        assert os.environ["DSPY_CACHEDIR"] == str(cache_dir)
        ask(cached_lm)
        ask(cached_lm)
        assert calls().calls == 1  # the second call came from this run's cache
        assert any(cache_dir.iterdir())
    with isolated_dspy_cache(tmp_path / "run2"):
        ask(cached_lm)
        assert calls().calls == 2  # a new run does not see run1's answers
    with isolated_dspy_cache(None):
        ask(cached_lm)
        ask(cached_lm)
        assert calls().calls == 4  # no cache at all


def test_isolated_cache_restores_the_previous_one(tmp_path: Path) -> None:
    before = vars(dspy).get("cache")
    env_before = os.environ.get("DSPY_CACHEDIR")
    with isolated_dspy_cache(tmp_path):
        assert vars(dspy).get("cache") is not before
    assert vars(dspy).get("cache") is before
    assert os.environ.get("DSPY_CACHEDIR") == env_before
