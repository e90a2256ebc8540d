"""The offline doubles: stand-ins for what a real run talks to, kept out of the core.

- `sim/`, `sim_responder.py`: the deterministic simulated LM (the policy, and the
  gateway's responder around it);
- `inprocess.py`: ASGI apps reached without a socket, behind a respx router;
- `lm_backends.py`: the `sim` and `respx` LM backends (entry points of the
  `mipro_bench.lm_backends` group);
- `respx_fixture.py`: the `mipro_sim_respx` pytest fixture (a `pytest11` entry point);
- `synth_backend/`: the local Synth-compatible backend, which runs Synth's published
  MIPROv2 (`synth-optimizers`) and stands in for Synth's hosted service (the
  `mipro_bench.synth_backends` entry point `local`).

The core (every other module of `mipro_bench`, and `task_app`) never imports this
package; it reaches these only through the entry points, as it would a third party's.
"""
