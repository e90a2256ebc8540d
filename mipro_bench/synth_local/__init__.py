"""A local Synth-compatible backend that runs Synth's published MIPROv2 on this machine.

The unmodified synth-ai 0.7.3 SDK submits to it and polls it exactly as it
does the hosted backend; results from it are labelled backend="local". An
offline job is executed by `synth-optimizers`' MIPROv2 (its TPE, its phase-3
proposer loop, its candidate selection); this package is the plumbing around it.
Modules: app (routes), jobs (store and states), config (the job's table),
offline (a job run by Synth's MIPROv2), budget (its rollout plan), proposer_agent
(Synth's proposer turns through the LM gateway), online (client-driven MIPRO),
accounting (a job's context and counts), interceptor and patterns (candidate
substitution), rollouts (task-app calls), auth (keys), server (start it).
"""

from mipro_bench.synth_local.server import LocalBackend, start_local_backend

__all__ = ["LocalBackend", "start_local_backend"]
