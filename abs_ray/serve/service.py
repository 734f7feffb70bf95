"""The swap service core: masks, inpainting and background swapping for a batch of requests.

This is everything the model deployment does, without Ray: :class:`SwapService` holds the
mask source (a trained detector, or the zero-shot saliency), the inpainter and the background
bank on one device, and :meth:`SwapService.process` answers a list of :class:`Job` at once,
which is what ``@serve.batch`` hands over. One batch runs the mask model once for every job
that needs a mask (all images resized to its input size), then each job's own step at the
job's image size: compositing (:func:`abs_ray.ops.sample_swap_params` then
:func:`abs_ray.ops.swap_backgrounds`), the mask, or inpainting.

Randomness is only in :func:`~abs_ray.ops.sample_swap_params`, drawn from a CPU generator
seeded by the job's seed: the same image, options, seed and bank give the same parameters,
and so the same pixels, on any device and in any batch.

A job that fails gets its exception back in its slot; the other jobs of the batch go on.

Example:
    >>> import numpy as np
    >>> from abs_ray.serve.bank import BackgroundBank
    >>> from abs_ray.serve.config import ServiceConfig
    >>> service = SwapService.from_config(
    ...     ServiceConfig(demo_bank_size=4, device="cpu"), pretrained=False)
    >>> image = np.zeros((24, 32, 3), dtype=np.uint8)
    >>> mask = np.zeros((24, 32), dtype=np.uint8)
    >>> mask[8:16, 8:16] = 255
    >>> (out,) = service.process([Job("swap", image, mask=mask, swap=SwapOptions(n=2, seed=1))])
    >>> len(out.images), out.images[0].shape, sorted(out.params[0])[:3]
    (2, (24, 32, 3), ['angle', 'bg_group', 'bg_id'])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from abs_ray import __version__
from abs_ray.devices import resolve_device
from abs_ray.errors import AbsRayError
from abs_ray.models.inpainters import Inpainter, create_inpainter
from abs_ray.ops import SwapParams, sample_swap_params, swap_backgrounds
from abs_ray.ops.masks import masks_from_background_prob
from abs_ray.serve.bank import BackgroundBank
from abs_ray.serve.config import ServiceConfig
from abs_ray.serve.jobs import (
    InpaintResult,
    Job,
    MaskResult,
    Result,
    SwapOptions,
    SwapResult,
    check_job,
)
from abs_ray.serve.mask_source import MaskSource, load_mask_source
from abs_ray.serve.output import PipelineOutput, open_output
from abs_ray.web.errors import InvalidRequestError

__all__ = ["SwapService", "resolve_device"]

logger = logging.getLogger(__name__)


def _to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float in ``[0, 1]`` on ``device``."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    return tensor.permute(2, 0, 1)[None].float().div_(255.0)


def _to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """``(B, 3, H, W)`` float in ``[0, 1]`` -> ``B`` arrays ``(H, W, 3)`` uint8."""
    u8 = images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return list(u8.permute(0, 2, 3, 1).cpu().numpy())


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(
        images, size=size, mode="bilinear", align_corners=False, antialias=True
    ).clamp_(0.0, 1.0)


class SwapService:
    """Masks, inpainting and swaps on one device, for batches of :class:`Job`.

    Args:
        mask_source: the :class:`MaskSource`.
        inpainter: the inpainter of ``inpaint`` jobs.
        bank: the background bank.
        cfg: service settings (limits, ``inpaint_max_side``).
        device: where tensors live.
        output: the pipeline output the bank and mask source come from, if they do
            (reported by :meth:`info`).

    Use :meth:`from_config` to build one from a :class:`ServiceConfig`.
    """

    def __init__(
        self,
        mask_source: MaskSource,
        inpainter: Inpainter,
        bank: BackgroundBank,
        cfg: ServiceConfig,
        device: torch.device,
        output: PipelineOutput | None = None,
    ) -> None:
        self.output = output
        self.mask_source = mask_source
        self.inpainter = inpainter
        self.bank = bank
        self.cfg = cfg
        self.device = device
        self._bank_info = bank.info()
        self._healthy = True
        self._batches = 0
        self._jobs = 0

    @classmethod
    def from_config(
        cls,
        cfg: ServiceConfig,
        device: torch.device | str | None = None,
        pretrained: bool = True,
        output: str | None = None,
    ) -> SwapService:
        """Load the mask source, the inpainter and the bank named by ``cfg`` (or ``output``).

        Args:
            cfg: service settings.
            device: overrides ``cfg.device``.
            pretrained: see :func:`load_mask_source`.
            output: a pipeline output (its ``--out``) whose bank and detector to serve
                (:func:`abs_ray.serve.output.open_output`); ``cfg`` must then name neither.

        Raises:
            ConfigError, StorageError, DatasetError, WeightsMismatchError: bad settings, a
                bad output, or unreadable checkpoint/bank; the replica does not start.
        """
        found = None
        if output is not None:
            found = open_output(output)
            cfg = found.service_config(cfg)
        dev = resolve_device(cfg.device) if device is None else torch.device(device)
        source = load_mask_source(cfg, dev, pretrained=pretrained)
        inpainter = create_inpainter(cfg.inpainter, **cfg.inpainter_kwargs)
        if cfg.bank is None:
            bank = BackgroundBank.demo(cfg.demo_bank_size, image_size=224)
        else:
            bank = BackgroundBank.from_pipeline_output(
                cfg.bank, limit=cfg.bank_limit, max_pixels=cfg.max_pixels
            )
        logger.info(
            "swap service on %s: masks from %s, inpainter %s, bank %s (%d)",
            dev,
            source.kind,
            cfg.inpainter,
            bank.source,
            len(bank),
        )
        return cls(source, inpainter, bank, cfg, dev, output=found)

    # --- public -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Models, versions, device, bank, and batches/jobs answered so far (JSON-able)."""
        return {
            "abs_ray": __version__,
            "torch": torch.__version__,
            "device": str(self.device),
            "mask_source": self.mask_source.info,
            "inpainter": {**self.inpainter.config(), "max_side": self.cfg.inpaint_max_side},
            "bank": self._bank_info,
            "output": None if self.output is None else self.output.info(),
            "stats": {
                "batches": self._batches,
                "jobs": self._jobs,
                "mean_batch_size": self._jobs / self._batches if self._batches else None,
            },
        }

    def check_health(self) -> None:
        """Raise if the service cannot answer (a device fault was seen)."""
        if not self._healthy:
            raise RuntimeError("swap service marked unhealthy after a device fault")

    def process(self, jobs: Sequence[Job]) -> list[Result | Exception]:
        """Answer a batch of jobs: one result, or the exception it raised, per job.

        Args:
            jobs: the batch.

        Returns:
            A list as long as ``jobs``: :class:`SwapResult`, :class:`MaskResult`,
            :class:`InpaintResult`, or an exception (typed :class:`AbsRayError` for bad
            requests, anything else for faults).
        """
        self._batches += 1
        self._jobs += len(jobs)
        results: list[Result | Exception | None] = [None] * len(jobs)
        valid: list[int] = []
        for i, job in enumerate(jobs):
            try:
                check_job(job)
                valid.append(i)
            except AbsRayError as exc:
                results[i] = exc
        need_mask = [i for i in valid if jobs[i].mask is None]
        prob: dict[int, torch.Tensor] = {}
        if need_mask:
            try:
                grids = self._predict([jobs[i].image for i in need_mask])
                prob = {i: grids[k : k + 1] for k, i in enumerate(need_mask)}
            except Exception as exc:  # a fault of the whole call goes to each of its jobs
                self._note_fault(exc)
                logger.exception("mask model failed on a batch of %d", len(need_mask))
                for i in need_mask:
                    results[i] = exc
        for i in valid:
            if results[i] is not None:
                continue
            try:
                results[i] = self._run(jobs[i], prob.get(i))
            except AbsRayError as exc:
                results[i] = exc
            except Exception as exc:
                self._note_fault(exc)
                logger.exception("%s job failed", jobs[i].kind)
                results[i] = exc
        return results  # type: ignore[return-value]

    # --- steps --------------------------------------------------------------------------

    def _note_fault(self, exc: Exception) -> None:
        text = str(exc)
        if "CUDA error" in text or "device-side assert" in text:
            self._healthy = False

    @torch.inference_mode()
    def _predict(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """``P(background)`` grids ``(B, G, G)`` for images of any sizes (one model call)."""
        s = self.mask_source.image_size
        batch = torch.cat([_resize(_to_tensor(im, self.device), (s, s)) for im in images])
        logits = self.mask_source.model(batch)
        return torch.sigmoid(logits.float())

    @torch.inference_mode()
    def _run(self, job: Job, prob: torch.Tensor | None) -> Result:
        image = _to_tensor(job.image, self.device)
        height, width = job.image.shape[:2]
        if job.mask is not None:
            alpha = torch.from_numpy(job.mask).to(self.device)[None, None].float().div_(255.0)
            loose = (alpha > 0).float()
            source = "upload"
        else:
            alpha, loose = masks_from_background_prob(
                prob,
                (height, width),
                tight=self.mask_source.tight,
                loose=self.mask_source.loose,
            )
            source = self.mask_source.kind
        if job.kind == "mask":
            to_u8 = lambda m: m[0, 0].mul(255).round().to(torch.uint8).cpu().numpy()  # noqa: E731
            return MaskResult(
                alpha=to_u8(alpha),
                loose=to_u8(loose),
                prob=None if prob is None else prob[0].cpu().numpy().astype(np.float32),
                tight_threshold=self.mask_source.tight,
                loose_threshold=self.mask_source.loose,
                mask_source=source,
            )
        if job.kind == "inpaint":
            filled, fraction = self._inpaint(image, loose)
            return InpaintResult(_to_uint8(filled)[0], fraction, source)
        return self._swap(job, image, alpha, source)

    def _inpaint(self, image: torch.Tensor, hole: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Fill ``hole``; above ``inpaint_max_side`` at reduced size, replacing hole pixels only."""
        height, width = image.shape[-2:]
        side = self.cfg.inpaint_max_side
        if max(height, width) <= side:
            region = self.inpainter.hole_mask(hole)
            return self.inpainter(image, hole), float(region.mean())
        ratio = side / max(height, width)
        small = (max(2, round(height * ratio)), max(2, round(width * ratio)))
        small_hole = (F.interpolate(hole, size=small, mode="area") > 0).float()
        filled = self.inpainter(_resize(image, small), small_hole)
        region = F.interpolate(
            self.inpainter.hole_mask(small_hole), size=(height, width), mode="nearest"
        )
        region = torch.maximum(region, (hole > 0).float())
        up = F.interpolate(filled, size=(height, width), mode="bilinear", align_corners=False)
        return torch.where(region > 0, up.clamp(0, 1), image), float(region.mean())

    def _swap(self, job: Job, image: torch.Tensor, alpha: torch.Tensor, source: str) -> SwapResult:
        opts = job.swap or SwapOptions()
        n = opts.n
        height, width = image.shape[-2:]
        if n > self.cfg.max_variants:
            raise InvalidRequestError(f"n must be <= {self.cfg.max_variants}, got {n}")
        if n * height * width > self.cfg.max_work_pixels:
            raise InvalidRequestError(
                f"n * width * height = {n} * {width} * {height} = {n * width * height} is over "
                f"the limit of {self.cfg.max_work_pixels} pixels per request"
            )
        cfg = opts.swap_config(min(height, width))
        generator = torch.Generator().manual_seed(opts.seed)
        alpha_n = alpha.expand(n, -1, -1, -1).contiguous()
        if job.background is not None:
            candidates = None
            bank_labels = torch.zeros(1, dtype=torch.long)
        else:
            candidates = self.bank.select(opts.labels, opts.groups)
            bank_labels = torch.from_numpy(self.bank.labels[candidates])
        params = sample_swap_params(
            alpha_n, torch.zeros(n, dtype=torch.long), bank_labels, cfg, generator
        )
        chosen = params.bg_index.cpu()
        unique, local_index = torch.unique(chosen, return_inverse=True)
        if candidates is None:
            backgrounds = _resize(_to_tensor(job.background, self.device), (height, width))
        else:
            backgrounds = torch.cat(
                [
                    _resize(
                        _to_tensor(self.bank.images[candidates[u]], self.device), (height, width)
                    )
                    for u in unique.tolist()
                ]
            )
        local = SwapParams(
            bg_index=local_index.to(self.device),
            scale=params.scale,
            angle=params.angle,
            translate=params.translate,
        )
        images, _ = swap_backgrounds(
            image.expand(n, -1, -1, -1), alpha_n, backgrounds, local, opts.feather
        )
        records = params.to_records()
        for record, position in zip(records, chosen.tolist(), strict=True):
            if candidates is None:
                record.update(bg_index=-1, bg_id="upload", bg_label=None, bg_group=None)
            else:
                index = int(candidates[position])
                record.update(
                    bg_index=index,
                    bg_id=self.bank.ids[index],
                    bg_label=int(self.bank.labels[index]),
                    bg_group=int(self.bank.groups[index]),
                )
        return SwapResult(
            images=_to_uint8(images),
            params=records,
            seed=opts.seed,
            mask_source=source,
            foreground_fraction=float((alpha > 0).float().mean()),
            bank_fingerprint=None if candidates is None else self._bank_info["fingerprint"],
        )
