"""Ray Serve application: AutoBackSwap augmentation on demand over HTTP.

Two deployments (the logic is in :mod:`abs_ray.serve`; this file only wires it):

- ``SwapIngress`` (FastAPI): body limits, upload parsing, decoding, PNG/JSON encoding, errors;
- ``SwapModel``: mask source + inpainter + background bank on one device; every request goes
  through one ``@serve.batch`` method, so concurrent requests share a mask-model call.

Run it::

    serve run deployments.augment:app                  # defaults: demo bank, zero-shot masks
    serve run deployments/serve_config.yaml            # the same, with autoscaling settings
    serve deploy deployments/serve_config.yaml         # onto a running cluster

``build_app(args)`` is the application builder the config's ``import_path`` names; ``args``
are :class:`abs_ray.serve.config.ServiceConfig` fields (unknown keys are refused).

What is served: ``SwapModel``'s ``user_config: {output: <pipeline --out>}`` in the Serve
config names a pipeline output whose bank and detector the model loads
(:mod:`abs_ray.serve.output`); changing it and re-applying the config reloads the model in
place (``SwapModel.reconfigure``), with no restart and no failed request.
"""

# No `from __future__ import annotations` here: FastAPI must see real annotations on the
# route methods after Serve rewrites their signatures (string ones turn `request` into a
# required query parameter).
from abs_ray.env import configure_environment

configure_environment()

import asyncio  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from typing import Annotated, Any  # noqa: E402

from fastapi import Depends, Query, Request  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402
from ray import serve  # noqa: E402
from ray.serve import Application  # noqa: E402
from ray.serve.handle import DeploymentHandle  # noqa: E402

from abs_ray.errors import AbsRayError  # noqa: E402
from abs_ray.serve import docs as offline_docs  # noqa: E402
from abs_ray.serve import http, query, responses  # noqa: E402
from abs_ray.serve.config import ServiceConfig, parse_user_config  # noqa: E402
from abs_ray.serve.retry import call_with_retries  # noqa: E402
from abs_ray.web.errors import ServiceUnavailableError  # noqa: E402
from abs_ray.web.handlers import error_response  # noqa: E402

logger = logging.getLogger(__name__)

api = http.create_api()


@serve.deployment(name="SwapModel", health_check_period_s=10, health_check_timeout_s=60)
class SwapModel:
    """Masks, inpainting and swaps, batched (see :class:`abs_ray.serve.service.SwapService`)."""

    def __init__(self, config: dict[str, Any]) -> None:
        import torch

        self.cfg = ServiceConfig.from_dict(config)
        torch.set_num_threads(max(1, int(self.cfg.model_num_cpus)))
        # Loaded by reconfigure(), which Serve calls before the first request: build_app
        # always gives a user_config, so the output to serve is read once, there.
        self.service = None
        self.served: dict[str, Any] = {}
        self.reload_error: str | None = None
        self.process_batch.set_max_batch_size(self.cfg.max_batch_size)
        self.process_batch.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve the pipeline output ``user_config["output"]`` (None: ``args``' bank/detector).

        Serve calls this at start and on every change of this deployment's ``user_config``
        in the Serve config, without restarting the replica. The new output is checked and
        loaded off the event loop while the current one keeps answering, then replaces it
        in one assignment: no request fails or waits for the reload. A reload that fails
        keeps the current output (``/v1/info`` shows ``reload_error``); at start it fails
        the replica, so a bad output fails the deployment with its ConfigError.
        """
        from abs_ray.serve.service import SwapService

        wanted = parse_user_config(user_config)
        if self.service is not None and wanted == self.served:
            return
        try:
            service = await asyncio.to_thread(
                SwapService.from_config, self.cfg, output=wanted["output"]
            )
        except Exception as exc:
            if self.service is None:
                raise
            self.reload_error = f"{wanted['output']}: {type(exc).__name__}: {exc}"
            logger.error("reload failed; still serving %s: %s", self.served, self.reload_error)
            return
        self.service, self.served, self.reload_error = service, wanted, None
        logger.info("serving %s", wanted["output"] or "the bank and detector of args")

    async def process(self, job):
        """Answer one :class:`~abs_ray.serve.jobs.Job` (batched with concurrent ones).

        A request error (:class:`~abs_ray.errors.AbsRayError`) is *returned*, so that bad
        input is not logged as a replica failure; any other exception is raised.
        """
        result = await self.process_batch(job)
        if isinstance(result, BaseException) and not isinstance(result, AbsRayError):
            raise result
        return result

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def process_batch(self, jobs: list) -> list:
        # Off the event loop, so health checks and queueing go on during a batch.
        return await asyncio.to_thread(self.service.process, jobs)

    def info(self) -> dict[str, Any]:
        """Models, versions, device, bank, the pipeline output served (and a failed reload)."""
        return {**self.service.info(), "reload_error": self.reload_error}

    def check_health(self) -> None:
        """Serve calls this periodically; raising restarts the replica."""
        if self.service is not None:
            self.service.check_health()


@serve.deployment(name="SwapIngress", health_check_period_s=10)
@serve.ingress(api)
class SwapIngress:
    """HTTP API; see ``/docs``."""

    def __init__(self, model: DeploymentHandle, config: dict[str, Any]) -> None:
        self.model = model
        self.cfg = ServiceConfig.from_dict(config)

    async def _call_model(self, method: str, *args: Any) -> Any:
        """``model.<method>.remote(*args)``, sent again if the model replica dies meanwhile.

        Raises:
            ServiceUnavailableError: the replica was lost on every attempt.
        """
        return await call_with_retries(
            lambda: getattr(self.model, method).remote(*args),
            retries=self.cfg.model_retries,
            backoff_s=self.cfg.retry_backoff_s,
        )

    async def _answer(self, request: Request, kind: str, parts: tuple[str, ...], options=None):
        """Read, parse and decode the upload, then let the model answer the job.

        Raises:
            AbsRayError: a request error, from here or returned by the model.
        """
        deadline = http.body_deadline(self.cfg.body_timeout_s)
        body = await http.read_body(request, self.cfg.max_body_bytes, deadline)
        upload = await http.parse_upload(request, body, parts)
        job = await asyncio.to_thread(http.decode_upload, upload, kind, self.cfg, options)
        result = await self._call_model("process", job)
        if isinstance(result, BaseException):
            raise result
        return result

    @api.post(
        "/v1/swap",
        summary="Paste the image's foreground on other backgrounds",
        response_class=Response,
        responses={200: {"content": {"image/png": {}, "application/json": {}}}}
        | http.ERROR_RESPONSES,
        openapi_extra=http.openapi_body(http.SWAP_PARTS),
        dependencies=[Depends(query.single_valued(query.SwapQuery))],
    )
    async def swap(self, request: Request, query: Annotated[query.SwapQuery, Query()]) -> Response:
        """Swap the background: a PNG for ``n = 1``, else JSON.

        The PNG's sampled params are in ``X-Swap-Params``; JSON holds base64 PNGs and the
        params of each variant. The same image, parameters and ``seed`` give the same bytes
        (on the same bank).
        """
        try:
            seed = query.seed if query.seed is not None else http.new_seed()
            options = query.options(self.cfg, seed)
            result = await self._answer(request, "swap", http.SWAP_PARTS, options)
            return await asyncio.to_thread(responses.swap_response, result, query.format)
        except Exception as exc:  # every failure becomes a JSON error response
            return error_response(exc)

    @api.post(
        "/v1/mask",
        summary="The foreground mask and the patch grid",
        response_class=Response,
        responses={200: {"content": {"application/json": {}, "image/png": {}}}}
        | http.ERROR_RESPONSES,
        openapi_extra=http.openapi_body(http.MASK_PARTS),
        dependencies=[Depends(query.single_valued(query.MaskQuery))],
    )
    async def mask(self, request: Request, query: Annotated[query.MaskQuery, Query()]) -> Response:
        """The foreground mask and the detector's patch grid.

        JSON: alpha and loose masks (base64 PNG), ``P(background)`` per patch and the 0/1
        foreground patch string; ``format=png``: the alpha mask PNG.
        """
        try:
            result = await self._answer(request, "mask", http.MASK_PARTS)
            return await asyncio.to_thread(responses.mask_response, result, query.format)
        except Exception as exc:
            return error_response(exc)

    @api.post(
        "/v1/inpaint",
        summary="The completed background (foreground removed and inpainted)",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}} | http.ERROR_RESPONSES,
        openapi_extra=http.openapi_body(http.INPAINT_PARTS),
    )
    async def inpaint(
        self, request: Request, query: Annotated[query.InpaintQuery, Query()]
    ) -> Response:
        """PNG of the image with its loose foreground mask (or the uploaded mask) inpainted."""
        try:
            result = await self._answer(request, "inpaint", http.INPAINT_PARTS)
            return await asyncio.to_thread(responses.inpaint_response, result)
        except Exception as exc:
            return error_response(exc)

    @api.get("/v1/info", summary="Models, versions, bank size, limits")
    async def info(self) -> Any:
        """What is deployed: mask source, inpainter, bank, limits, batching."""
        import ray

        try:
            model = await self._call_model("info")
        except Exception as exc:
            return error_response(exc)
        c = self.cfg
        return {
            "service": "abs-ray swap",
            "ray": ray.__version__,
            **model,
            "batching": {
                "max_batch_size": c.max_batch_size,
                "batch_wait_timeout_s": c.batch_wait_timeout_s,
            },
            "limits": {
                "max_body_bytes": c.max_body_bytes,
                "max_pixels": c.max_pixels,
                "max_variants": c.max_variants,
                "max_work_pixels": c.max_work_pixels,
                "body_timeout_s": c.body_timeout_s,
            },
            "defaults": {
                "scale": list(c.scale),
                "degrees": c.degrees,
                "translate": c.translate,
                "feather": c.feather,
            },
        }

    @api.get(
        "/v1/ready",
        summary="Whether the service can answer now (a tiny real job through the model)",
        responses={503: {"description": "the model did not answer within ready_timeout_s"}},
    )
    async def ready(self) -> Any:
        """200 when the model answered a 16x16 mask job within ``ready_timeout_s``, else 503.

        Unlike Serve's ``/-/healthz`` (200 as soon as the HTTP proxy runs, before any model
        replica exists and while none is alive), this is what "ready to serve" means: point
        load balancers and readiness probes here. No retries: it reports the present.
        """
        job = http.ready_job()
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.cfg.ready_timeout_s):
                result = await self.model.process.remote(job)
            if isinstance(result, BaseException):
                raise result
        except Exception as exc:
            reason = (
                f"no answer within {self.cfg.ready_timeout_s:g} s"
                if isinstance(exc, TimeoutError)
                else f"{type(exc).__name__}: {exc}"
            )
            logger.warning("not ready: %s", reason)
            return error_response(ServiceUnavailableError(f"model not ready: {reason}"))
        return {"ready": True, "model_ms": round((time.perf_counter() - start) * 1000, 1)}

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> Response:
        """The OpenAPI schema (404 when the ``docs`` setting is off)."""
        if not self.cfg.docs:
            return offline_docs.not_found()
        return JSONResponse(request.app.openapi())

    @api.get("/docs", include_in_schema=False)
    async def docs(self, request: Request) -> Response:
        """Swagger UI, served from the installed package (no CDN)."""
        if not self.cfg.docs:
            return offline_docs.not_found()
        return offline_docs.docs_page(api.title, request.scope.get("root_path", ""))

    @api.get("/docs/{asset}", include_in_schema=False)
    async def docs_asset(self, asset: str) -> Response:
        """One of Swagger UI's files (:data:`abs_ray.serve.docs.DOCS_ASSETS`)."""
        if not self.cfg.docs:
            return offline_docs.not_found()
        return offline_docs.docs_asset(asset)

    def check_health(self) -> None:
        """The ingress holds no model: healthy while its process runs."""


def _num_gpus(value: float | str) -> float:
    """``auto`` -> 1 when the cluster (or, outside Ray, this machine) has a GPU, else 0."""
    if value != "auto":
        return float(value)
    import ray

    if ray.is_initialized():
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    import torch

    return 1.0 if torch.cuda.is_available() else 0.0


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application: ``SwapIngress`` bound to ``SwapModel``, configured by ``args``.

    ``SwapModel.max_ongoing_requests`` is ``max(32, 4 * max_batch_size)``: requests wait in the
    replica's batch queue (where the next batch fills while one runs) rather than in the
    caller's router, which backs off when every replica is full. ``SwapIngress`` takes 512:
    a request waiting for its body or for the model costs the ingress a coroutine, so its
    slots are sized for many slow clients at once (each cut after ``body_timeout_s``), not
    for CPU work. The Serve config may override both (and adds autoscaling).

    Raises:
        ConfigError: an unknown key or bad value in ``args``.
    """
    cfg = ServiceConfig.from_dict(args)
    settings = cfg.to_dict()
    model = SwapModel.options(
        ray_actor_options={"num_cpus": cfg.model_num_cpus, "num_gpus": _num_gpus(cfg.num_gpus)},
        max_ongoing_requests=max(32, 4 * cfg.max_batch_size),
        # The Serve config's `deployments: [{name: SwapModel, user_config: {output: ...}}]`
        # replaces this default; changing it there reloads without a restart.
        user_config={"output": None},
    ).bind(settings)
    return SwapIngress.options(
        ray_actor_options={"num_cpus": cfg.ingress_num_cpus}, max_ongoing_requests=512
    ).bind(model, settings)


app = build_app()
