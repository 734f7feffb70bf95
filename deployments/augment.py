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
"""

# No `from __future__ import annotations` here: FastAPI must see real annotations on the
# route methods after Serve rewrites their signatures (string ones turn `request` into a
# required query parameter).
from abs_ray.env import configure_environment

configure_environment()

import asyncio  # noqa: E402
import logging  # noqa: E402
from typing import Annotated, Any  # noqa: E402

from fastapi import Query, Request  # noqa: E402
from fastapi.responses import Response  # noqa: E402
from ray import serve  # noqa: E402
from ray.serve import Application  # noqa: E402
from ray.serve.handle import DeploymentHandle  # noqa: E402

from abs_ray.errors import AbsRayError  # noqa: E402
from abs_ray.serve import http  # noqa: E402
from abs_ray.serve.config import ServiceConfig  # noqa: E402

logger = logging.getLogger(__name__)

api = http.create_api()


@serve.deployment(name="SwapModel", health_check_period_s=10, health_check_timeout_s=60)
class SwapModel:
    """Masks, inpainting and swaps, batched (see :class:`abs_ray.serve.service.SwapService`)."""

    def __init__(self, config: dict[str, Any]) -> None:
        import torch

        from abs_ray.serve.service import SwapService

        self.cfg = ServiceConfig.from_dict(config)
        torch.set_num_threads(max(1, int(self.cfg.model_num_cpus)))
        self.service = SwapService.from_config(self.cfg)
        self.process_batch.set_max_batch_size(self.cfg.max_batch_size)
        self.process_batch.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)

    async def process(self, job):
        """Answer one :class:`~abs_ray.serve.service.Job` (batched with concurrent ones).

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
        """Models, versions, device, bank."""
        return self.service.info()

    def check_health(self) -> None:
        """Serve calls this periodically; raising restarts the replica."""
        self.service.check_health()


@serve.deployment(name="SwapIngress", health_check_period_s=10)
@serve.ingress(api)
class SwapIngress:
    """HTTP API; see ``/docs``."""

    def __init__(self, model: DeploymentHandle, config: dict[str, Any]) -> None:
        self.model = model
        self.cfg = ServiceConfig.from_dict(config)

    async def _answer(self, request: Request, kind: str, parts: tuple[str, ...], options=None):
        """Read, parse and decode the upload, then let the model answer the job.

        Raises:
            AbsRayError: a request error, from here or returned by the model.
        """
        body = await http.read_body(request, self.cfg.max_body_bytes)
        upload = await http.parse_upload(request, body, parts)
        job = await asyncio.to_thread(http.decode_upload, upload, kind, self.cfg, options)
        result = await self.model.process.remote(job)
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
    )
    async def swap(self, request: Request, query: Annotated[http.SwapQuery, Query()]) -> Response:
        """Swap the background: a PNG for ``n = 1``, else JSON.

        The PNG's sampled params are in ``X-Swap-Params``; JSON holds base64 PNGs and the
        params of each variant. The same image, parameters and ``seed`` give the same bytes
        (on the same bank).
        """
        try:
            seed = query.seed if query.seed is not None else http.new_seed()
            options = query.options(self.cfg, seed)
            result = await self._answer(request, "swap", http.SWAP_PARTS, options)
            return await asyncio.to_thread(http.swap_response, result, query.format)
        except Exception as exc:  # every failure becomes a JSON error response
            return http.error_response(exc)

    @api.post(
        "/v1/mask",
        summary="The foreground mask and the patch grid",
        response_class=Response,
        responses={200: {"content": {"application/json": {}, "image/png": {}}}}
        | http.ERROR_RESPONSES,
        openapi_extra=http.openapi_body(http.MASK_PARTS),
    )
    async def mask(self, request: Request, query: Annotated[http.MaskQuery, Query()]) -> Response:
        """The foreground mask and the detector's patch grid.

        JSON: alpha and loose masks (base64 PNG), ``P(background)`` per patch and the 0/1
        foreground patch string; ``format=png``: the alpha mask PNG.
        """
        try:
            result = await self._answer(request, "mask", http.MASK_PARTS)
            return await asyncio.to_thread(http.mask_response, result, query.format)
        except Exception as exc:
            return http.error_response(exc)

    @api.post(
        "/v1/inpaint",
        summary="The completed background (foreground removed and inpainted)",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}} | http.ERROR_RESPONSES,
        openapi_extra=http.openapi_body(http.INPAINT_PARTS),
    )
    async def inpaint(
        self, request: Request, query: Annotated[http.InpaintQuery, Query()]
    ) -> Response:
        """PNG of the image with its loose foreground mask (or the uploaded mask) inpainted."""
        try:
            result = await self._answer(request, "inpaint", http.INPAINT_PARTS)
            return await asyncio.to_thread(http.inpaint_response, result)
        except Exception as exc:
            return http.error_response(exc)

    @api.get("/v1/info", summary="Models, versions, bank size, limits")
    async def info(self) -> Any:
        """What is deployed: mask source, inpainter, bank, limits, batching."""
        import ray

        try:
            model = await self.model.info.remote()
        except Exception as exc:
            return http.error_response(exc)
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
            },
            "defaults": {
                "scale": list(c.scale),
                "degrees": c.degrees,
                "translate": c.translate,
                "feather": c.feather,
            },
        }

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
    caller's router, which backs off when every replica is full. The Serve config may
    override it (and adds autoscaling).

    Raises:
        ConfigError: an unknown key or bad value in ``args``.
    """
    cfg = ServiceConfig.from_dict(args)
    settings = cfg.to_dict()
    model = SwapModel.options(
        ray_actor_options={"num_cpus": cfg.model_num_cpus, "num_gpus": _num_gpus(cfg.num_gpus)},
        max_ongoing_requests=max(32, 4 * cfg.max_batch_size),
    ).bind(settings)
    return SwapIngress.options(
        ray_actor_options={"num_cpus": cfg.ingress_num_cpus}, max_ongoing_requests=128
    ).bind(model, settings)


app = build_app()
