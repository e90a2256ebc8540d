"""The client side of the task app, shared by everything that runs prompts through it.

- `rollouts`: `TaskAppClient` (POST /rollout with a policy config), `RolloutOutcome`,
  `LabelledExample`;
- `patterns`: `PromptPattern`, a prompt with wildcards (query, intent list), as Synth's
  jobs describe their candidates;
- `interceptor`: the task app's `inference_url`, which swaps a candidate's instruction
  into each call and forwards it to the LM gateway.

These are core, not part of the local Synth backend: the `task_app` executor scores
prompts this way with any LM (real or simulated), and the local Synth backend
(`mipro_bench.offline.synth_backend`) uses the same pieces for its rollouts.
"""
