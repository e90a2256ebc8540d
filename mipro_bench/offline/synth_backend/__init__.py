"""A local Synth-compatible backend that runs Synth's published MIPROv2 on this machine.

A stand-in for Synth's hosted service: the unmodified synth-ai 0.7.3 SDK submits
to it and polls it exactly as it does the hosted backend; results from it are
labelled backend="local". An offline job is executed by `synth-optimizers`'
MIPROv2 (its TPE, its phase-3 proposer loop, its candidate selection); this
package is the plumbing around it. The Synth adapter finds it through the
`mipro_bench.synth_backends` entry point `local` (`start_local_backend`).
Modules: app (routes), jobs (store and states), config (the job's table),
offline_job (a job run by Synth's MIPROv2), budget (its rollout plan), proposer_agent
(Synth's proposer turns through the LM gateway), online (client-driven MIPRO),
accounting (a job's context and counts), auth (keys), server (start it), shapes
(hosted payload shapes). Rollouts and candidate substitution use the core's
task-app client (`mipro_bench.task_client`: rollouts, patterns, interceptor).
"""

from mipro_bench.offline.synth_backend.server import LocalBackend, start_local_backend

__all__ = ["LocalBackend", "start_local_backend"]
