"""The local Synth-compatible backend's HTTP routes (what synth-ai 0.7.3 calls).

Jobs (both prefixes, both auth styles):
  POST /api/policy-optimization/online/jobs      submit (SDK: X-API-Key)
  POST /api/prompt-learning/online/jobs          submit (earlier script: Bearer)
  GET  /api/{prefix}/online/jobs/{id}[?include_metadata=true]
  GET  /api/{prefix}/online/jobs/{id}/events?since_seq=&limit=
  POST /api/{prefix}/online/jobs/{id}/cancel
Keys: GET /api/v1/crypto/public-key, POST /api/v1/env-keys (sealed ENVIRONMENT_API_KEY).
Interceptor: POST /v1/{route_id}/{cid}/chat/completions (no key: the route id is the secret).
Online MIPRO: POST /v1/mipro/{system_id}/{rollout_id}/chat/completions (proxy),
  POST /api/{prefix}/online/mipro/systems/{id}/status, GET .../systems/{id}/state.
Health: GET /health, GET /api/health.

Every client error is a 4xx JSON `{"error": {code, message}, "detail": message}`;
an unexpected exception is logged and answered 500 without a traceback (a bug,
never a reaction to input).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mipro_bench.offline.synth_backend.accounting import JobContext, JobFailed
from mipro_bench.offline.synth_backend.auth import AuthError, EnvKeyError, KeyRing
from mipro_bench.offline.synth_backend.config import (
    ConfigError,
    MiproJobConfig,
    parse_job_config,
    prompt_learning_section,
    redacted_section,
)
from mipro_bench.offline.synth_backend.jobs import Job, JobStore
from mipro_bench.offline.synth_backend.offline_job import run_offline_job
from mipro_bench.offline.synth_backend.online import (
    READY_TIMEOUT_S,
    OnlineError,
    OnlineSystem,
    propose_online_candidates,
)
from mipro_bench.offline.synth_backend.shapes import SYSTEM_PREFIX, offline_state, shaped_view
from mipro_bench.task_client.interceptor import (
    Interceptor,
    error_json,
    interceptor_router,
    read_json_body,
)

log = logging.getLogger(__name__)


class NotFound(Exception):
    """An id this caller cannot see (answered 404; other owners' jobs look absent)."""

PREFIXES = ("policy-optimization", "prompt-learning")
MAX_EVENTS_LIMIT = 10_000


@dataclass(frozen=True)
class BackendSettings:
    api_keys: tuple[str, ...]
    # Used when a job's owner uploaded no ENVIRONMENT_API_KEY (tests, raw HTTP clients).
    default_env_api_key: str | None = None
    # The LM a job uses when its config names none (mipro.policy_inference_url,
    # mipro.proposer.inference_url): an OpenAI-compatible base URL ending in /v1.
    lm_base_url: str | None = None
    lm_api_key: str | None = None
    # How task apps reach this backend; default: the URL the job was submitted to.
    public_url: str | None = None
    # Which payload shape job views answer in (mipro_bench.offline.synth_backend.shapes): "local",
    # or one of the hosted backend's shapes, to test clients against each.
    answer_shape: str = "local"


@dataclass
class BackendState:
    settings: BackendSettings
    keys: KeyRing
    store: JobStore = field(default_factory=JobStore)
    interceptor: Interceptor = field(default_factory=Interceptor)
    systems: dict[str, OnlineSystem] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    # Where task apps send a job's inference calls (its interceptor routes): this backend's
    # own URL, unless it is also mounted in-process (`--lm respx`), then the mount's URL.
    inference_url: str | None = None


def _state(request: Request) -> BackendState:
    return request.app.state.backend


def _owner(request: Request) -> str:
    return _state(request).keys.check(request.headers)


def _job_for(request: Request, job_id: str) -> Job:
    owner = _owner(request)
    job = _state(request).store.get(job_id)
    if job is None or job.owner != owner:
        raise NotFound(f"no job {job_id!r}")
    return job


def _bool_param(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _int_param(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"query parameter {name} must be an integer") from None
    if not low <= number <= high:
        raise ConfigError(f"query parameter {name} must be in [{low}, {high}]")
    return number


# --- submitting -----------------------------------------------------------------------------


def _context(state: BackendState, owner: str, cfg: MiproJobConfig, backend_url: str
             ) -> JobContext:
    settings = state.settings
    upstream = cfg.policy_inference_url or settings.lm_base_url
    proposer = cfg.proposer.inference_url or settings.lm_base_url
    if not upstream or not proposer:
        raise ConfigError(
            "no LM to use: set prompt_learning.mipro.policy_inference_url and "
            "mipro.proposer.inference_url (the local backend was started without an LM)")
    return JobContext(
        store=state.store,
        interceptor=state.interceptor,
        backend_url=backend_url,
        env_api_key=state.keys.env_key(owner) or settings.default_env_api_key,
        upstream_url=upstream,
        proposer_url=proposer,
        # A key named by the job goes with the job's own URLs; else the backend's own LM key.
        upstream_api_key=cfg.inference_api_key or settings.lm_api_key,
    )


def _spawn(state: BackendState, job: Job, coro: Any) -> None:
    task = asyncio.get_running_loop().create_task(coro, name=f"job-{job.id}")
    state.tasks[job.id] = task

    def _done(t: asyncio.Task[Any]) -> None:
        state.tasks.pop(job.id, None)
        if not t.cancelled() and t.exception() is not None:  # run_* never raise; belt and braces
            state.store.fail(job, f"local backend error: {t.exception()!r}")

    task.add_done_callback(_done)


async def _submit(request: Request) -> JSONResponse:
    state = _state(request)
    owner = _owner(request)
    payload = await read_json_body(request)
    if isinstance(payload, JSONResponse):
        return payload
    section = prompt_learning_section(payload)
    cfg = parse_job_config(section)
    metadata = payload.get("metadata") if isinstance(payload.get("metadata"), dict) else {}
    backend_url = (state.settings.public_url or str(request.base_url)).rstrip("/")
    # A ConfigError here leaves no job behind.
    ctx = _context(state, owner, cfg, state.inference_url or backend_url)
    job = state.store.create(owner=owner, algorithm="mipro", mode=cfg.mode,
                             config_body={"prompt_learning": redacted_section(section)},
                             metadata=dict(metadata))
    if cfg.mode == "online":
        system = OnlineSystem(system_id=OnlineSystem.new_id(), job_id=job.id,
                              rollout_budget=cfg.rollout_budget, seed=cfg.seed,
                              baseline=cfg.initial_prompt)
        state.systems[system.system_id] = system
        job.metadata.update(mipro_system_id=system.system_id,
                            mipro_proxy_url=f"{backend_url}/v1/mipro/{system.system_id}")
        _spawn(state, job, _setup_online(state, job, cfg, ctx, system))
    else:
        _spawn(state, job, run_offline_job(job, cfg, ctx))
    return JSONResponse({"job_id": job.id, "id": job.id, "status": job.status,
                         "mode": cfg.mode, "backend": "local"})


async def _setup_online(state: BackendState, job: Job, cfg: MiproJobConfig, ctx: JobContext,
                        system: OnlineSystem) -> None:
    """Propose the candidates, then wait for the client's rollouts (job stays running)."""
    import tempfile
    from pathlib import Path

    from mipro_bench.task_client.rollouts import TaskAppClient

    state.store.transition(job, "running")
    acct = system.acct
    app = TaskAppClient(cfg.task_app_url, ctx.env_api_key, timeout_s=cfg.rollout_timeout_s,
                        max_concurrent=cfg.max_concurrent)
    try:
        workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="mipro-bench-synth-")) / \
            "synth-optimizers" / job.id
        workdir.mkdir(parents=True, exist_ok=True)
        candidates = await propose_online_candidates(cfg, ctx, job, app, acct, workdir)
    except Exception as exc:
        system.setup_error = (str(exc) if isinstance(exc, JobFailed)
                              else f"local backend error: {type(exc).__name__}: {exc}")
        state.store.fail(job, system.setup_error)
        system.ready.set()  # waiting proxy calls get the error, not a hang
        return
    finally:
        await app.aclose()
    system.set_candidates(candidates)
    route = state.interceptor.register(
        cfg.initial_prompt, {c.cid: c.pattern for c in candidates},
        upstream_url=ctx.upstream_url, upstream_api_key=ctx.upstream_api_key,
        on_call=acct.on_policy_call, route_id=system.system_id)
    system.route_id = route.route_id
    system.ready.set()  # only now: candidates, study and route are all in place
    state.store.emit(job, "online.ready", "online system ready", {
        "system_id": system.system_id, "proxy_url": job.metadata.get("mipro_proxy_url"),
        "candidates": len(candidates)})


def _finish_online(state: BackendState, system: OnlineSystem) -> None:
    job = state.store.get(system.job_id)
    if job is None or job.terminal or not system.finished:
        return
    acct = system.acct
    result = system.result()
    result["lm_calls"] = acct.lm_calls_dict()
    result["trajectory"] = list(system.trajectory)
    if system.route_id:
        state.interceptor.unregister(system.route_id)
    state.store.finish(job, result, {
        "best_score": result["best_score"], "best_full_score": None,
        "best_minibatch_score": result["best_minibatch_score"],
        "best_candidate_id": result["best_candidate_id"], "best_prompt": result["best_prompt"],
        "rollouts_used": result["rollouts_used"], "total_rollouts": result["rollouts_used"],
        "lm_calls": result["lm_calls"],
    })


# --- the app ------------------------------------------------------------------------------------


def _jobs_router() -> APIRouter:
    router = APIRouter()

    for prefix in PREFIXES:
        base = f"/api/{prefix}/online"
        router.add_api_route(f"{base}/jobs", _submit, methods=["POST"],
                             name=f"submit-{prefix}")

        @router.get(f"{base}/jobs/{{job_id}}", name=f"get-{prefix}")
        async def get_job(job_id: str, request: Request) -> Any:
            job = _job_for(request, job_id)
            include = _bool_param(request.query_params.get("include_metadata"))
            shape = _state(request).settings.answer_shape
            return shaped_view(job.view(include_metadata=include or shape != "local"), shape)

        @router.get(f"{base}/jobs/{{job_id}}/events", name=f"events-{prefix}")
        async def job_events(job_id: str, request: Request) -> Any:
            job = _job_for(request, job_id)
            q = request.query_params
            since = _int_param(q.get("since_seq"), "since_seq", 0, 0, 2**31 - 1)
            limit = _int_param(q.get("limit"), "limit", 1000, 1, MAX_EVENTS_LIMIT)
            events = _state(request).store.events(job, since_seq=since, limit=limit)
            return {"job_id": job.id, "events": [e.to_dict() for e in events],
                    "next_seq": events[-1].seq if events else since}

        @router.post(f"{base}/jobs/{{job_id}}/cancel", name=f"cancel-{prefix}")
        async def cancel_job(job_id: str, request: Request) -> Any:
            state = _state(request)
            job = _job_for(request, job_id)
            if job.terminal:
                return {"job_id": job.id, "status": job.status,
                        "message": f"job already {job.status}"}
            state.store.transition(job, "cancelled", error="cancelled by the client")
            task = state.tasks.get(job.id)
            if task is not None:
                task.cancel()
            return {"job_id": job.id, "status": job.status, "message": "cancelled"}

        @router.post(f"{base}/mipro/systems/{{system_id}}/status", name=f"status-{prefix}")
        async def system_status(system_id: str, request: Request) -> Any:
            state = _state(request)
            system = _system_for(request, system_id)
            body = await read_json_body(request)
            if isinstance(body, JSONResponse):
                return body
            out = system.status(body)
            _finish_online(state, system)
            return out

        @router.get(f"{base}/mipro/systems/{{system_id}}/state", name=f"state-{prefix}")
        async def system_state(system_id: str, request: Request) -> Any:
            if system_id.startswith(SYSTEM_PREFIX) and system_id not in _state(request).systems:
                job = _job_for(request, system_id.removeprefix(SYSTEM_PREFIX))
                if job.status == "succeeded":
                    return offline_state(job.id, job.result)
            system = _system_for(request, system_id)
            return system.state()

    @router.get("/api/jobs/{job_id}", name="get-canonical")
    async def get_job_canonical(job_id: str, request: Request) -> Any:
        """The canonical job route (later hosted releases), beside the legacy ones."""
        job = _job_for(request, job_id)
        return shaped_view(job.view(include_metadata=True),
                           _state(request).settings.answer_shape, canonical=True)

    return router


def _system_for(request: Request, system_id: str) -> OnlineSystem:
    owner = _owner(request)
    state = _state(request)
    system = state.systems.get(system_id)
    job = state.store.get(system.job_id) if system else None
    if system is None or job is None or job.owner != owner:
        raise NotFound(f"no MIPRO system {system_id!r}")
    return system


def _proxy_router() -> APIRouter:
    router = APIRouter()

    @router.post("/v1/mipro/{system_id}/{rollout_id}/chat/completions")
    async def online_proxy(system_id: str, rollout_id: str, request: Request) -> Any:
        state = _state(request)
        system = state.systems.get(system_id)
        if system is None:
            return error_json(404, "unknown_system", f"no MIPRO system {system_id!r}")
        try:
            await asyncio.wait_for(system.ready.wait(), READY_TIMEOUT_S)
        except TimeoutError:
            return error_json(503, "not_ready", "the online system is still proposing")
        if system.setup_error:
            return error_json(409, "system_failed", system.setup_error)
        body = await read_json_body(request)
        if isinstance(body, JSONResponse):
            return body
        if len(rollout_id) > 200:
            return error_json(400, "invalid_request", "rollout_id is longer than 200 characters")
        cid = system.pick(rollout_id)
        route = state.interceptor.route(system.route_id or "")
        if route is None:
            return error_json(409, "system_closed", "the online job has ended")
        return await state.interceptor.forward(route, cid, body)

    return router


def _keys_router() -> APIRouter:
    router = APIRouter()

    @router.get("/api/v1/crypto/public-key")
    async def public_key(request: Request) -> Any:
        _owner(request)
        return {"public_key": _state(request).keys.public_key_b64,
                "alg": "libsodium.sealedbox.v1"}

    @router.post("/api/v1/env-keys")
    async def upload_env_key(request: Request) -> Any:
        owner = _owner(request)
        body = await read_json_body(request)
        if isinstance(body, JSONResponse):
            return body
        name, ciphertext = body.get("name"), body.get("ciphertext_b64")
        if not isinstance(name, str) or not isinstance(ciphertext, str):
            raise EnvKeyError("body must be {\"name\": str, \"ciphertext_b64\": str}")
        _state(request).keys.store_sealed(owner, name, ciphertext)
        return {"id": f"envkey_{name.lower()}", "name": name, "stored": True}

    @router.get("/health")
    @router.get("/api/health")
    async def health() -> Any:
        return {"status": "ok", "healthy": True, "service": "mipro-bench local synth backend",
                "backend": "local"}

    return router


# Client errors raised by the handlers: exception type -> (status, error code).
_CLIENT_ERRORS: dict[type[Exception], tuple[int, str]] = {
    AuthError: (401, "unauthorized"),
    ConfigError: (400, "invalid_config"),
    EnvKeyError: (400, "invalid_env_key"),
    NotFound: (404, "not_found"),
}


def _install_errors(app: FastAPI) -> None:
    for exc_type, (status, code) in _CLIENT_ERRORS.items():

        async def _client_error(
            _: Request, exc: Exception, status: int = status, code: str = code
        ) -> JSONResponse:
            return error_json(status, code, str(exc))

        app.add_exception_handler(exc_type, _client_error)

    @app.exception_handler(OnlineError)
    async def _online(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OnlineError)
        return error_json(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: Exception) -> JSONResponse:
        return error_json(422, "invalid_request", "request does not match the route's schema")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = "not_found" if exc.status_code == 404 else "http_error"
        return error_json(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("local synth backend: %s %s failed", request.method, request.url.path)
        return error_json(500, "internal_error", f"{type(exc).__name__} (see the server log)")


def create_app(settings: BackendSettings) -> FastAPI:
    state = BackendState(settings=settings, keys=KeyRing(settings.api_keys))

    async def lifespan(app: FastAPI) -> Any:
        yield
        for task in list(state.tasks.values()):
            task.cancel()
        await asyncio.gather(*state.tasks.values(), return_exceptions=True)
        await state.interceptor.aclose()

    from contextlib import asynccontextmanager

    app = FastAPI(title="mipro-bench local Synth backend", lifespan=asynccontextmanager(lifespan))
    app.state.backend = state
    _install_errors(app)
    app.include_router(_keys_router())
    app.include_router(_jobs_router())
    app.include_router(_proxy_router())
    app.include_router(interceptor_router(state.interceptor))
    return app
