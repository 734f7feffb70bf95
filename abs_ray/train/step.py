"""The training step: swap (or ``erm_aug``'s augmentation), crop and flip, forward, backward.

:func:`train_step` is what every Ray Train worker repeats on each decoded batch (see
:mod:`abs_ray.train.loop`), and what ``bench/train_step.py`` times; it needs no Ray.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from abs_ray.ops import SwapConfig, to_float_chw
from abs_ray.train.augment import (
    RecentBackgrounds,
    apply_crop,
    cutmix,
    heavy_augment,
    sample_crop_params,
    swap_batch,
)
from abs_ray.train.config import TrainConfig

__all__ = ["StepOutput", "swap_config", "train_step"]


@dataclasses.dataclass(frozen=True, eq=False)
class StepOutput:
    """What one training step returns.

    Attributes:
        loss: the (smoothed) mean cross-entropy, a 0-d tensor (detached).
        correct: samples whose argmax equals the label, 0-d tensor.
        swapped: samples that were composited, 0-d tensor.
        inputs: ``(B, 3, S, S)`` the model's inputs (after swap, crop and flip), detached.
    """

    loss: torch.Tensor
    correct: torch.Tensor
    swapped: torch.Tensor
    inputs: torch.Tensor


def swap_config(cfg: TrainConfig, size: int) -> SwapConfig:
    """The :class:`~abs_ray.ops.SwapConfig` of a training config at image side ``size``."""
    return SwapConfig(
        scale=cfg.swap_scale,
        degrees=cfg.swap_degrees,
        translate=cfg.translate_pixels(size),
        class_uniform=True,
        keep_in_frame=True,
    )


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    batch: dict[str, torch.Tensor],
    cfg: TrainConfig,
    bank: RecentBackgrounds | None,
    generator: torch.Generator,
    size: int,
) -> StepOutput:
    """One optimisation step on a decoded batch, everything on the batch's device.

    ``abs``/``oracle``: add the batch's backgrounds to ``bank``, composite every sample's
    foreground on a class-uniformly drawn bank background (probability ``cfg.swap_prob``);
    ``erm``: the original images; ``erm_aug``: the original images with colour jitter and
    RandAugment, then CutMix after the crop. Then RandomResizedCrop + flip, forward, smoothed
    cross-entropy (mixed over CutMix's two labels), backward, optimizer step (skipped when
    ``optimizer`` is None, for timing the forward/backward alone).

    Args:
        model: classifier on the batch's device.
        optimizer: its optimizer, or None.
        batch: ``image`` ``(B, H, W, 3)`` uint8, ``label`` ``(B,)``; for the swap also
            ``alpha`` ``(B, H, W)`` uint8 and ``background`` ``(B, H, W, 3)`` uint8.
        cfg: the training config.
        bank: background bank (required when ``cfg.swaps``).
        generator: CPU generator for swap, crop and flip draws.
        size: model input side.

    Returns:
        :class:`StepOutput`.
    """
    images = to_float_chw(batch["image"])
    labels = batch["label"].long()
    swapped = torch.zeros((), device=images.device)
    if cfg.swaps:
        alpha = to_float_chw(batch["alpha"])
        bank.add(batch["background"].permute(0, 3, 1, 2), labels)
        images, mask, _ = swap_batch(
            images,
            alpha,
            labels,
            bank,
            swap_config(cfg, images.shape[-1]),
            cfg.swap_prob,
            generator,
            cfg.feather_sigma,
        )
        swapped = mask.sum()
    elif cfg.method == "erm_aug":
        images = heavy_augment(images)
    crop = sample_crop_params(
        images.shape[0], images.shape[-2], images.shape[-1], cfg.crop_scale, cfg.hflip, generator
    )
    inputs = apply_crop(images, crop, size)
    mix = None
    if cfg.method == "erm_aug":
        inputs, mix = cutmix(inputs, generator)
    logits = model(inputs)
    loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
    if mix is not None and mix.lam < 1.0:
        other = labels[mix.perm.to(labels.device)]
        loss = mix.lam * loss + (1.0 - mix.lam) * F.cross_entropy(
            logits, other, label_smoothing=cfg.label_smoothing
        )
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    correct = (logits.detach().argmax(dim=1) == labels).sum()
    return StepOutput(loss.detach(), correct, swapped, inputs.detach())
