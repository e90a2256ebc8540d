"""A local Synth-compatible backend: job API, interceptor, instruction-only MIPRO loop.

The unmodified synth-ai 0.7.3 SDK submits to it and polls it exactly as it
does the hosted backend; results from it are labelled backend="local".
Modules: app (routes), jobs (store and states), config (the job's table),
mipro (the offline loop), online (client-driven MIPRO), interceptor and
patterns (candidate substitution), proposer (instruction proposals),
rollouts (task-app calls), auth (keys), server (start it).
"""

from mipro_bench.synth_local.server import LocalBackend, start_local_backend

__all__ = ["LocalBackend", "start_local_backend"]
