"""Running one Synth MIPRO job: task app, tunnel, backend, the SDK's submit and poll.

Order of a run (each step undone in reverse when the block ends):
1. the task app over the case's panel, on localhost, with its own
   ENVIRONMENT_API_KEY (the caller's, if set, else a fresh one);
2. the tunnel, from synth-ai's `TunneledLocalAPI`: `Localhost` for a local
   backend (no network), Cloudflare (managed lease) for the hosted one;
3. the backend: the hosted one (SYNTH_API_KEY), an external one at
   `backend_url`, or the in-process local backend wired to this case's LM
   gateway scope, phase optimize;
4. the SDK: `PolicyOptimizationJob.from_dict(...)` (which uploads the task
   app's key, sealed, to the backend) -> `submit()` -> for online MIPRO the
   client's rollouts -> `poll_until_complete()`.
A job that ends failed, cancelled or not at all raises `SynthJobFailed` with
one line; the runner records the case as failed. Synth's hosted service refusing
the path (the job route gone, the tunnel URL or the key refused) or a Cloudflare
tunnel that cannot open here raises `HostedRefused` with one line pointing at the
local path (`synth_refusals`); the runner records the case as refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, Literal, Protocol

from mipro_bench.optimizers.base import OptimizeOutcome, OptimizeRequest, UsageError
from mipro_bench.optimizers.synth_backends import synth_backend_factory
from mipro_bench.optimizers.synth_refusals import (
    HostedRefused,
    poll_refusal,
    submit_refusal,
    tunnel_failure_line,
)
from mipro_bench.optimizers.synth_sdk import (
    HOSTED_BACKEND_URL,
    JobSettings,
    SynthJobFailed,
    job_config,
    one_line,
    outcome_from,
    quiet_unknown_fields,
    sdk_environment,
    sdk_model_for,
)


class JobOptions(Protocol):
    """The adapter's options a job reads (SynthOptions has them)."""

    backend_url: str | None
    job_timeout_s: float
    poll_interval_s: float | None
    rollout_timeout_s: float
    task_app_port: int


class SynthJobOwner(Protocol):
    """What runs a job needs of the adapter: its options and the task app it wants. A
    protocol, so this module never imports the adapter that calls it."""

    @property
    def options(self) -> JobOptions: ...

    def task_app_options(self) -> dict[str, Any]: ...

LOCAL_POLL_INTERVAL_S = 0.25
HOSTED_POLL_INTERVAL_S = 5.0
SDK_AUTH_LOGGER = "synth_ai.sdk.localapi.auth"  # where synth-ai logs a failed env-key upload


def backend_url_for(opt: SynthJobOwner, kind: Literal["local", "hosted"]) -> str | None:
    """Where to submit: explicit URL, else SYNTH_BACKEND_URL / production when hosted.

    None means "start the in-process local backend".
    """
    if opt.options.backend_url:
        return opt.options.backend_url.rstrip("/")
    if kind == "hosted":
        return (os.environ.get("SYNTH_BACKEND_URL") or HOSTED_BACKEND_URL).rstrip("/")
    return None


def is_loopback_url(url: str | None) -> bool:
    """A backend on this machine (127.0.0.0/8, ::1 or localhost): reachable without a tunnel."""
    import ipaddress
    from urllib.parse import urlsplit

    if not url:
        return False
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tunnel_backend_name(kind: Literal["local", "hosted"], backend_url: str | None) -> str:
    """Which synth-ai tunnel the task app needs: Localhost for the local backend and for any
    backend on this machine (Synth's own backend run locally, the earlier `--local`),
    a Cloudflare lease only for a remote hosted one."""
    return "Localhost" if kind == "local" or is_loopback_url(backend_url) \
        else "CloudflareManagedLease"


def check_backend_reachable(url: str, api_key: str, timeout_s: float = 10.0) -> None:
    """UsageError in one line unless the backend answers HTTP at all."""
    import httpx

    try:
        httpx.get(f"{url}/api/health", headers={"Authorization": f"Bearer {api_key}"},
                  timeout=timeout_s, trust_env=True)
    except httpx.HTTPError as exc:
        raise UsageError(f"the Synth backend at {url} is unreachable "
                         f"({type(exc).__name__}: {one_line(exc)})") from None


@contextlib.contextmanager
def open_tunnel(port: int, kind: Literal["local", "hosted"], *, env_api_key: str,
                api_key: str | None, backend_url: str | None) -> Iterator[str]:
    """The public URL of the task app: Localhost for a backend on this machine, a
    Cloudflare lease for the remote hosted one (`tunnel_backend_name`)."""
    from synth_ai.core.tunnels import TunnelBackend, TunneledLocalAPI

    backend = TunnelBackend[tunnel_backend_name(kind, backend_url)]
    remote = backend is not TunnelBackend.Localhost
    try:
        tunnel = asyncio.run(TunneledLocalAPI.create(
            port, backend=backend, api_key=api_key, env_api_key=env_api_key,
            backend_url=backend_url if remote else None))
    except Exception as exc:
        if remote:  # without its tunnel the hosted path cannot run here at all
            raise HostedRefused(tunnel_failure_line(exc, backend.name, backend_url)) from None
        raise SynthJobFailed(f"could not open a {backend.name} tunnel to the task app: "
                             f"{one_line(exc)}") from None
    try:
        # Localhost's URL says "localhost"; the task app listens on 127.0.0.1 only.
        yield tunnel.url.replace("://localhost:", "://127.0.0.1:")
    finally:
        with contextlib.suppress(Exception):
            tunnel.close()


class _Collect(logging.Handler):
    """Keeps the messages of the records it is given."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


@contextlib.contextmanager
def sdk_warnings(name: str = SDK_AUTH_LOGGER) -> Iterator[list[str]]:
    """synth-ai's logged warnings under `name` (its failed env-key upload), kept instead of
    printed: a refused upload comes just before a refused submit, whose one line is the
    whole story; a job that goes on says them once, as progress, and keeps them."""
    logger, handler = logging.getLogger(name), _Collect()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def json_fetcher(backend_url: str, api_key: str, timeout_s: float = 30.0
                 ) -> Callable[[str], dict[str, Any] | None]:
    """GET backend_url + path (Bearer key) -> its JSON object, or None (any error, non-200):
    how the adapter reads a job's other payloads (canonical route, system state)."""
    import httpx

    def fetch(path: str) -> dict[str, Any] | None:
        try:
            response = httpx.get(f"{backend_url}{path}", timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {api_key}"},
                                 trust_env=not is_loopback_url(backend_url))
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        try:
            data = response.json()
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    return fetch


def _poll(job: Any, opt: SynthJobOwner, request: OptimizeRequest, interval: float,
          hosted_url: str | None) -> Any:
    """The SDK's poll; `hosted_url` (the hosted backend's, None for the local one) turns the
    service refusing the poll route into `HostedRefused`."""
    seen: dict[str, Any] = {}

    def on_status(data: dict[str, Any]) -> None:
        status, score = data.get("status"), data.get("best_score")
        key = f"{status}:{score}"
        if seen.get("last") != key:
            seen["last"] = key
            shown = "-" if score is None else f"{score:.3f}"
            request.say(f"Synth job {job.job_id}: {status} (best score {shown})")

    try:
        return job.poll_until_complete(timeout=opt.options.job_timeout_s, interval=interval,
                                       on_status=on_status, request_timeout=30.0)
    except RuntimeError as exc:  # the SDK gives up after 5 consecutive polling errors
        refused = hosted_url and poll_refusal(exc, hosted_url, job.job_id)
        if refused:
            raise HostedRefused(refused) from None
        raise SynthJobFailed(f"polling Synth job {job.job_id} failed: {one_line(exc)}") from None


def run_synth_job(opt: SynthJobOwner, request: OptimizeRequest, settings: JobSettings,
                  kind: Literal["local", "hosted"]) -> OptimizeOutcome:
    from synth_ai.sdk.optimization import PolicyOptimizationJob

    from mipro_bench.optimizers.synth_online import OnlineDriveError, drive_online
    from mipro_bench.session_servers import private_servers as private_harness

    external = backend_url_for(opt, kind)
    synth_key = os.environ.get("SYNTH_API_KEY")
    if external is not None:
        if not synth_key:
            raise UsageError(f"the Synth backend at {external} needs SYNTH_API_KEY")
        check_backend_reachable(external, synth_key)
    optimize_url = request.lm_base_url("optimize")
    with contextlib.ExitStack() as stack:
        harness = request.harness or stack.enter_context(private_harness(request.splits))
        task_app = harness.task_app(port=opt.options.task_app_port, **opt.task_app_options())
        env_key = task_app.api_key
        public_url = harness.shared(("synth_tunnel", task_app.port, kind, external), lambda: (
            open_tunnel(task_app.port, kind, env_api_key=env_key, api_key=synth_key,
                        backend_url=external)))
        if external is None:
            # Not the hosted path's: the local backend is a plugin (the offline package's).
            start_local_backend = synth_backend_factory()
            # One local backend per session; each job names its own LM URLs (this case's
            # gateway scope) in its config, so jobs never share state or usage.
            local = harness.shared("synth_local_backend", lambda: start_local_backend(
                lm_api_key=request.lm.api_key, network=harness.network))
            backend_url, api_key = local.url, local.api_key
        else:
            backend_url, api_key = external, synth_key or ""
        model = request.lm.settings.model
        sdk_model = sdk_model_for(model, kind)
        config = job_config(
            request.splits, task_app_url=public_url, model=model,
            job=settings, temperature=request.lm.settings.temperature,
            max_tokens=request.lm.settings.limit_for("tool_call"),
            proposer_max_tokens=request.lm.settings.limit_for("proposer"),
            sdk_model=sdk_model,
            policy_inference_url=optimize_url if kind == "local" else None,
            proposer_inference_url=optimize_url if kind == "local" else None,
            inference_api_key=request.lm.api_key if kind == "local" else None,
            workdir=str(request.workdir.resolve()) if external is None else None,
        )
        # Only the hosted path's refusals point at the local path; the local one's are its own.
        hosted_url = backend_url if kind == "hosted" else None
        interval = opt.options.poll_interval_s or (
            LOCAL_POLL_INTERVAL_S if external is None else HOSTED_POLL_INTERVAL_S)
        online: dict[str, Any] = {}
        with sdk_environment(env_key):
            with quiet_unknown_fields() as unknown_fields, sdk_warnings() as warned:
                job = PolicyOptimizationJob.from_dict(
                    config, backend_url=backend_url, api_key=api_key, algorithm="mipro",
                    skip_health_check=kind == "hosted")
                try:
                    job_id = job.submit()
                except Exception as exc:  # RuntimeError (HTTP), click/ValueError (validation)
                    refused = hosted_url and submit_refusal(exc, hosted_url, public_url)
                    if refused:
                        raise HostedRefused(refused) from None
                    raise SynthJobFailed(f"submitting the Synth job to {backend_url} failed: "
                                         f"{one_line(exc)}") from None
            for message in warned:
                request.say(f"synth-ai: {message}")
            request.say(f"Synth job {job_id} submitted to {backend_url}")
            if settings.mode == "online":
                try:
                    summary = drive_online(
                        backend_url, api_key, job_id, request.splits,
                        rollouts=settings.rollouts, model=request.lm.settings.model,
                        temperature=request.lm.settings.temperature,
                        max_tokens=request.lm.settings.limit_for("tool_call"),
                        seed=settings.seed,
                        pool=config["prompt_learning"]["mipro"]["online_pool"],
                        concurrency=settings.max_concurrent,
                        timeout_s=opt.options.rollout_timeout_s)
                except (OnlineDriveError, OSError, ValueError) as exc:
                    with contextlib.suppress(Exception):
                        job.cancel(reason="online client failed")
                    raise SynthJobFailed(f"online MIPRO job {job_id}: {one_line(exc)}") from None
                online = summary.to_dict()
            result = _poll(job, opt, request, interval, hosted_url)
        if not result.is_terminal:
            with contextlib.suppress(Exception):
                job.cancel(reason="mipro-bench timeout")
            raise SynthJobFailed(f"Synth job {job_id} did not finish within "
                                 f"{opt.options.job_timeout_s:g}s "
                                 f"(last status: {result.status.value})")
        if not result.succeeded:
            raise SynthJobFailed(f"Synth job {job_id} {result.status.value}: "
                                 f"{result.error or 'no error given'}")
        extra = {"mipro_mode": settings.mode, "task_app_url": public_url,
                 "sdk_model": sdk_model or model,
                 "tunnel": tunnel_backend_name(kind, external),
                 "backend_url": backend_url, "settings": dict(settings.__dict__),
                 "sdk_unknown_fields": sorted(set(unknown_fields))}
        if warned:
            extra["sdk_warnings"] = warned
        if online:
            extra["online"] = online
        return outcome_from(result, backend="local" if kind == "local" else "hosted",
                            job_id=job_id, extra=extra, fetch=json_fetcher(backend_url, api_key),
                            system_id=online.get("system_id"))
