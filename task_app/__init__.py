"""The Banking77 task app (synth-ai 0.7.3 LocalAPI contract), served by uvicorn.

`build_task_app(splits, env_api_key=...)` builds the FastAPI app over a
caller's panel; `python -m task_app` (or `mipro-task-app`) serves it.
"""

from task_app.app import build_task_app
from task_app.dataset import DEFAULT_SPLIT, SPLIT_NAMES, TaskDataset, TaskInputError
from task_app.policy import PolicyDefaults
from task_app.rollout import APP_ID
from task_app.server import DEFAULT_PORT, TaskAppServer, serve_task_app

__all__ = [
    "APP_ID",
    "DEFAULT_PORT",
    "DEFAULT_SPLIT",
    "SPLIT_NAMES",
    "PolicyDefaults",
    "TaskAppServer",
    "TaskDataset",
    "TaskInputError",
    "build_task_app",
    "serve_task_app",
]
