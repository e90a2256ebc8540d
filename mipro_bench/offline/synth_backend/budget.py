"""How a job's rollout budget is spent by Synth's MIPROv2, planned before anything runs.

Synth's phase-3 loop (synth_optimizers.miprov2.core.run_phase3_loop) scores the
baseline once on train and once on held-out, then, after each proposer round,
runs train waves of `top_k` candidates it has not scored yet (its TPE never
scores a candidate twice), and finally scores its best train candidate on
held-out. It does not draw minibatches: whatever `evaluate_train` returns is a
trial's score. So the plan fixes how many rollouts each of those evaluations
gets, such that the whole job spends at most `rollout_budget` rollouts and
comes as close to it as the splits allow:

  val_n     = min(|val seeds|, budget // 4)     held-out seeds (baseline + final: 2 val_n)
  trials    = 1 + rounds * top_k                baseline + the candidates the waves score
  minibatch = min(|train pool|, (budget - 2 val_n) // trials)

With the matrix's 550 rollouts, val 50, train 100, 2 rounds and 6 proposals a
round (top_k 3): 2 x 50 held-out + 7 x 64 train = 548 rollouts. A budget too
small for that (the seed CLI's 3 rollouts) drops the held-out evaluations and
shrinks the waves until each trial gets at least one rollout.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SynthPlan:
    rollout_budget: int
    val_n: int  # held-out seeds per held-out evaluation (0: no held-out evaluation)
    proposer_rounds: int
    top_k: int  # candidates a train wave scores (one wave per proposer round)
    trials: int  # planned train trials, the baseline's included
    minibatch: int  # train seeds per trial
    # The proposer session's instruction-patch limit: twice what a wave scores, so Synth's
    # TPE chooses which proposals to score rather than scoring every one.
    proposals_per_round: int

    @property
    def planned_rollouts(self) -> int:
        return 2 * self.val_n + self.trials * self.minibatch

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "planned_rollouts": self.planned_rollouts}


def plan_synth_budget(rollout_budget: int, *, n_train: int, n_val: int, num_candidates: int,
                      proposal_rounds: int) -> SynthPlan:
    """The plan for one job (see the module docstring); raises ValueError on a zero budget."""
    if rollout_budget < 1:
        raise ValueError("rollout budget must be at least 1")
    if n_train < 1:
        raise ValueError("the train pool is empty")
    # No candidates asked for: the baseline alone (no proposer round).
    rounds = max(1, proposal_rounds) if num_candidates > 0 else 0
    top_k = max(1, math.ceil(num_candidates / rounds)) if rounds else 1
    val_n = min(n_val, rollout_budget // 4)
    train_budget = rollout_budget - 2 * val_n
    # A budget smaller than the trials shrinks the search: fewer rounds, then fewer per wave.
    while 1 + rounds * top_k > train_budget and (rounds > 1 or top_k > 1):
        if rounds > 1:
            rounds -= 1
        else:
            top_k -= 1
    trials = 1 + rounds * top_k
    minibatch = max(0, min(n_train, train_budget // trials))
    if minibatch == 0:  # budget 1: the baseline alone
        rounds, top_k, trials, minibatch = 0, 1, 1, 1
    return SynthPlan(rollout_budget=rollout_budget, val_n=val_n, proposer_rounds=rounds,
                     top_k=top_k, trials=trials, minibatch=minibatch,
                     proposals_per_round=2 * top_k if rounds else 0)
