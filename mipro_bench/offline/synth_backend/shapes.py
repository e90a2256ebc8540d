"""The local backend answering in the payload shapes Synth's hosted backend uses.

By default (`local`) a job view carries its result at the top level, plus this
backend's own fields (`best_instruction`, `best_full_score`, `candidates`...).
The hosted backend is known (from synth-ai's later SDK releases) to answer in
other shapes too; `BackendSettings.answer_shape` makes this backend answer in
one of them so the adapter can be tested against each:
- best_reward:    the score as `best_reward` (no `best_score`), prompt in `best_prompt`;
- metadata:       score and prompt only in `metadata.best_score` / `metadata.best_prompt`;
- best_candidate: the prompt as `best_candidate`, the score as `best_reward`;
- job_metadata:   score and prompt only in `job_metadata`;
- canonical:      the legacy routes carry status only; `GET /api/jobs/{id}` has the result;
- system_state:   the job view has no prompt, only `metadata.mipro_system_id`; the best
                  candidate is in `.../mipro/systems/{id}/state` (`best_candidate_id` and
                  `candidates`), also for an offline job.
In every hosted shape `best_instruction` (local-only) is left out, so it cannot decide
anything; the other local fields stay as enrichment.
"""

from __future__ import annotations

from typing import Any

ANSWER_SHAPES = ("local", "best_reward", "metadata", "best_candidate", "job_metadata",
                 "canonical", "system_state")
DECIDING = ("best_score", "best_prompt", "best_instruction")
SYSTEM_PREFIX = "sys_"


def system_id_of(job_id: str) -> str:
    """The system id an offline job's state is served under in the system_state shape."""
    return f"{SYSTEM_PREFIX}{job_id}"


def shaped_view(view: dict[str, Any], shape: str, *, canonical: bool = False) -> dict[str, Any]:
    """`view` (Job.view) as the hosted backend would answer it in `shape`; `canonical` for
    the `/api/jobs/{id}` route."""
    if shape == "local":
        return view
    score, prompt = view.get("best_score"), view.get("best_prompt")
    out = {k: v for k, v in view.items() if k not in DECIDING}
    done = view.get("status") == "succeeded"
    if shape == "best_reward":
        out.update(best_reward=score, best_prompt=prompt)
    elif shape == "best_candidate":
        out.update(best_reward=score, best_candidate=prompt)
    elif shape in ("metadata", "job_metadata"):
        out[shape] = {**(out.get(shape) or {}), "best_score": score, "best_prompt": prompt}
    elif shape == "canonical":
        if canonical:
            out.update(best_score=score, best_prompt=prompt)
    elif shape == "system_state":
        out["best_score"] = score
        metadata = dict(out.get("metadata") or {})
        if done:
            metadata.setdefault("mipro_system_id", system_id_of(str(view.get("job_id"))))
        out["metadata"] = metadata
    else:
        raise ValueError(f"unknown answer shape {shape!r} (one of {', '.join(ANSWER_SHAPES)})")
    return out


def offline_state(job_id: str, result: dict[str, Any]) -> dict[str, Any]:
    """A finished offline job's result as a MIPRO system state (best id + candidates by id)."""
    candidates = {}
    for c in result.get("candidates") or ():
        if isinstance(c, dict) and c.get("candidate_id"):
            candidates[c["candidate_id"]] = {
                "instruction": c.get("instruction"),
                "mean_reward": c.get("full_score") if c.get("full_score") is not None
                else c.get("minibatch_score"),
            }
    return {"system_id": system_id_of(job_id), "job_id": job_id, "version": 1,
            "best_candidate_id": result.get("best_candidate_id"), "candidates": candidates}
