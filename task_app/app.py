"""`build_task_app(splits, env_api_key=...)`: the Banking77 task app, built on synth-ai's contract.

The app comes from synth-ai 0.7.3's own `create_local_api(LocalAPIConfig(...))`,
so the routes, the RolloutRequest/RolloutResponse models and their JSON are
the SDK's (what Synth's backend and the local backend both speak). Added on
top, for reasons the SDK leaves open:
- the key is the app's own (`env_api_key`), checked by `ApiKeyMiddleware`,
  not re-read from the process environment on every request;
- `/health`, `/task_info` and `/rollout` are served by this app's router,
  which the SDK mounts before its own routes: /task_info takes `?split=` (the
  SDK's only knows seeds), /health reports this app's key prefix and panel,
  and /rollout runs the same executor as the SDK's route, reading the SDK's
  RolloutRequest and writing its RolloutResponse with pydantic's own JSON
  parser and serializer (same contract, about 0.5 ms less per rollout);
- every client error is a 4xx JSON answer (`task_app.errors`), bodies are
  bounded (`task_app.limits`), and the LM client lives for the app's lifetime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from synth_ai.sdk.localapi import LocalAPIConfig, create_local_api
from synth_ai.sdk.localapi._impl.contracts import RolloutRequest, RolloutResponse, TaskInfo

from mipro_bench.data import Splits
from mipro_bench.lm.client import DEFAULT_TIMEOUT_S
from mipro_bench.lm.retry import RetryPolicy
from mipro_bench.prompt import initial_prompt
from task_app.auth import ApiKeyMiddleware
from task_app.dataset import DEFAULT_SPLIT, SPLIT_NAMES, TaskDataset, TaskInputError
from task_app.errors import error_payload, install_error_handlers
from task_app.limits import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware
from task_app.lm_pool import ChatClientPool
from task_app.policy import PolicyDefaults
from task_app.rollout import APP_ID, RolloutRunner

APP_NAME = "Banking77 intent classification"
MAX_SEEDS_PER_QUERY = 1000


def _bad_request(exc: TaskInputError) -> HTTPException:
    return HTTPException(status_code=400, detail=error_payload(exc.code, exc.message))


async def execute_rollout(request: RolloutRequest, http_request: Request) -> RolloutResponse:
    """The rollout executor (the SDK's `LocalAPIConfig.rollout`): bad input -> 400."""
    runner: RolloutRunner = http_request.app.state.runner
    try:
        return await runner.run(request)
    except TaskInputError as exc:
        raise _bad_request(exc) from None


def _base_task_info(dataset: TaskDataset, defaults: PolicyDefaults) -> TaskInfo:
    return TaskInfo(
        task={"id": APP_ID, "name": APP_NAME,
              "description": f"Classify a banking customer query into one of "
                             f"{len(dataset.labels)} intents."},
        dataset={"id": APP_ID, "name": "Banking77", "splits": list(SPLIT_NAMES),
                 "default_split": DEFAULT_SPLIT,
                 "sizes": {name: dataset.size(name) for name in SPLIT_NAMES}},
        inference={"model": defaults.model, "inference_url": defaults.inference_url},
        limits={"max_turns": 1, "max_response_tokens": defaults.max_tokens},
    )


def _instance_info(dataset: TaskDataset, base: TaskInfo, split: str, seed: int) -> TaskInfo:
    example = dataset.example(split, seed)
    metadata: dict[str, Any] = {"split": split, "seed": seed, "example_id": example.id,
                                "query": example.text}
    if split != "test":
        # Training/validation labels are the optimizer's to see; held-out test labels are not.
        metadata["expected_intent"] = example.label
    return TaskInfo(task=base.task, dataset={**base.dataset.model_dump(), "split": split},
                    inference=base.inference, limits=base.limits, task_metadata=metadata)


def _taskset(dataset: TaskDataset) -> dict[str, Any]:
    # The baseline messages as Synth `initial_prompt` patterns: what an interceptor matches.
    return {**dataset.describe(), "initial_prompt": initial_prompt(dataset.labels)}


def _router(dataset: TaskDataset, base: TaskInfo, env_api_key: str) -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def banking77_health() -> dict[str, Any]:
        return {
            "healthy": True,
            "service": APP_ID,
            "auth": {"required": True, "expected_prefix": env_api_key[:6] + "..."},
            "sizes": {name: dataset.size(name) for name in SPLIT_NAMES},
        }

    @router.get("/task_info")
    async def banking77_task_info(
        seed: Annotated[list[int] | None, Query()] = None,
        seeds: Annotated[list[int] | None, Query()] = None,
        split: Annotated[str, Query(max_length=64)] = DEFAULT_SPLIT,
    ) -> Any:
        wanted = [*(seed or ()), *(seeds or ())]
        if not wanted:
            return {"taskset": _taskset(dataset)}
        if len(wanted) > MAX_SEEDS_PER_QUERY:
            raise _bad_request(TaskInputError(
                "too_many_seeds", f"at most {MAX_SEEDS_PER_QUERY} seeds per request"))
        try:
            infos = [_instance_info(dataset, base, split, s).model_dump() for s in wanted]
        except TaskInputError as exc:
            raise _bad_request(exc) from None
        return infos[0] if len(infos) == 1 else infos

    @router.post("/rollout", include_in_schema=False)  # the SDK's route documents the schema
    async def banking77_rollout(request: Request) -> Response:
        # The same contract as the SDK's /rollout route, which FastAPI would parse in Python
        # and whose answer it would convert twice more (synth-ai's to_jsonable, then
        # jsonable_encoder): pydantic's own JSON parser and serializer save ~0.5 ms a rollout.
        try:
            rollout_request = RolloutRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False, include_context=False)
            raise RequestValidationError(
                [{**err, "loc": ("body", *err["loc"])} for err in errors]) from None
        result = await execute_rollout(rollout_request, request)
        return Response(result.model_dump_json(), media_type="application/json")

    return router


def build_task_app(
    splits: Splits,
    *,
    env_api_key: str,
    default_policy: PolicyDefaults | None = None,
    lm_timeout_s: float = DEFAULT_TIMEOUT_S,
    retry: RetryPolicy | None = None,
    max_connections: int = 64,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The task app over `splits` (the caller's panel), guarded by `env_api_key`.

    `default_policy` fills policy.config fields a rollout leaves out (the CLI
    sets it from --lm/--api-base/--model); `lm_timeout_s` and `retry` bound
    each LM call, after which the rollout is scored 0 with the error recorded.
    """
    if not isinstance(env_api_key, str) or not env_api_key.strip():
        raise ValueError("build_task_app needs a non-empty env_api_key (ENVIRONMENT_API_KEY)")
    dataset = TaskDataset(splits)
    defaults = default_policy or PolicyDefaults()
    base = _base_task_info(dataset, defaults)

    async def open_client(app: FastAPI) -> None:
        # Created inside the serving loop: an httpx pool belongs to one event loop.
        client = ChatClientPool(max_connections=max_connections, timeout_s=lm_timeout_s,
                                retry=retry)
        app.state.runner = RolloutRunner(dataset, client, defaults)

    async def close_client(app: FastAPI) -> None:
        runner: RolloutRunner | None = getattr(app.state, "runner", None)
        if runner is not None:
            await runner.client.aclose()

    def task_instances(seeds: Sequence[int]) -> list[TaskInfo]:
        # Used by the SDK's own /task_info if a caller reaches it; ours answers first.
        try:
            return [_instance_info(dataset, base, DEFAULT_SPLIT, s) for s in seeds]
        except TaskInputError as exc:
            raise _bad_request(exc) from None

    config = LocalAPIConfig(
        app_id=APP_ID,
        name=APP_NAME,
        description="Banking77 intent classification, one forced tool call per rollout; "
                    "reward 1 when the mapped intent is the gold one.",
        provide_taskset_description=lambda: _taskset(dataset),
        provide_task_instances=task_instances,
        rollout=execute_rollout,
        base_task_info=base,
        routers=(_router(dataset, base, env_api_key),),
        require_api_key=False,  # ApiKeyMiddleware checks this app's own key instead
        ensure_localapi_auth=False,  # never mint, persist or upload a key from a server start
        expose_debug_env=False,
        startup_hooks=(open_client,),
        shutdown_hooks=(close_client,),
    )
    app = create_local_api(config)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, api_key=env_api_key)  # outermost: auth first
    app.state.dataset = dataset
    return app
