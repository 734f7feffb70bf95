"""Inpainters: complete a background by filling the hole left by a removed object.

Every inpainter is a callable on a batch::

    out = inpainter(image, mask)   # image (B, 3, H, W) in [0, 1], mask (B, 1, H, W), 1 = hole

with the same contract for all of them:

- the mask is binarised (``mask > 0.5``) and **dilated** by ``dilate`` pixels (square
  structuring element) before filling, so the object's soft edge goes too; the dilated hole is
  :meth:`Inpainter.hole_mask` and it is the only region that changes: every other pixel of the
  output is bit-identical to the input;
- the output is ``(B, 3, H, W)`` with the input's dtype and device, clamped to ``[0, 1]``;
- an image whose hole is empty is returned unchanged;
- an image whose dilated hole covers every pixel has nothing to copy from. With
  ``all_hole="gray"`` (default) it becomes uniform gray 0.5 and a warning is logged; with
  ``all_hole="raise"`` an :class:`AllHoleError` is raised instead.

Registered names (:func:`create_inpainter`):

========================  =============================================================
``patchmatch`` (default)  PatchMatch (``pypatchmatch``): textured fill copied from the
                          image's own background; per image, on CPU
``telea``                 OpenCV ``cv2.inpaint`` (Telea): fast smooth diffusion, per image
``gray``                  constant gray (paper ablation)
``mean``                  mean colour of the known pixels (paper ablation)
``noise``                 uniform noise (paper ablation)
``patch_scramble``        randomly permuted patches of the known background (paper ablation)
``torchscript``           any TorchScript module at a URI with
                          ``forward(image, mask) -> image``, batched on a device (how an
                          AOT-GAN or LaMa export is plugged in on GPU)
========================  =============================================================

Diffusion fills (``telea``) leave a smooth silhouette of the removed object that a classifier
can still learn from; ``patchmatch`` does not, which is why it is the default on CPU.

Example:
    >>> image = torch.rand(2, 3, 32, 32)
    >>> mask = torch.zeros(2, 1, 32, 32)
    >>> mask[:, :, 8:16, 8:16] = 1.0
    >>> inpainter = create_inpainter("mean", dilate=2)
    >>> out = inpainter(image, mask)
    >>> keep = inpainter.hole_mask(mask) == 0
    >>> bool(torch.equal(out.masked_select(keep), image.masked_select(keep)))
    True
"""

from __future__ import annotations

import abc
import inspect
import io
import logging
import threading
import warnings
from typing import Any, ClassVar

import numpy as np
import torch

from abs_ray.errors import AbsRayError, AssetUnavailableError, ConfigError
from abs_ray.io import S3Options, read_bytes
from abs_ray.models._registry import Registry
from abs_ray.ops.fill import fill_gray, fill_mean, fill_noise
from abs_ray.ops.masks import dilate_mask
from abs_ray.ops.scramble import patch_scramble

__all__ = [
    "DEFAULT_INPAINTER",
    "INPAINTERS",
    "AllHoleError",
    "GrayInpainter",
    "Inpainter",
    "InpainterOutputError",
    "InpaintingError",
    "MeanInpainter",
    "NoiseInpainter",
    "PatchMatchInpainter",
    "PatchScrambleInpainter",
    "TeleaInpainter",
    "TorchScriptInpainter",
    "create_inpainter",
    "inpainter_names",
]

logger = logging.getLogger(__name__)

DEFAULT_INPAINTER = "patchmatch"
ALL_HOLE_POLICIES = ("gray", "raise")

INPAINTERS: Registry[Inpainter] = Registry("inpainter")


class InpaintingError(AbsRayError, ValueError):
    """An image cannot be inpainted as asked."""


class AllHoleError(InpaintingError):
    """The dilated hole covers a whole image (raised with ``all_hole="raise"``)."""


class InpainterOutputError(InpaintingError):
    """A pluggable inpainter returned the wrong type, shape or non-finite values."""


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)} dtype {value.dtype} device {value.device}"
    return type(value).__name__


def _check_inputs(image: object, mask: object) -> None:
    """Raise :class:`ConfigError` unless image is (B,3,H,W) floating and mask (B,1,H,W)."""
    if (
        not isinstance(image, torch.Tensor)
        or image.ndim != 4
        or image.shape[1] != 3
        or not image.is_floating_point()
    ):
        raise ConfigError(f"image must be a (B, 3, H, W) floating tensor, got {_describe(image)}")
    if not isinstance(mask, torch.Tensor) or not (
        mask.is_floating_point() or mask.dtype == torch.bool
    ):
        raise ConfigError(f"mask must be a floating or bool tensor, got {_describe(mask)}")
    expected = (image.shape[0], 1, *image.shape[2:])
    if tuple(mask.shape) != expected:
        raise ConfigError(
            f"mask shape {tuple(mask.shape)} does not match image shape {tuple(image.shape)}: "
            f"expected {expected}"
        )
    if mask.device != image.device:
        raise ConfigError(f"mask is on {mask.device}, image on {image.device}")


def _to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float [0, 1] -> (B, H, W, 3) uint8 numpy (CPU copy)."""
    return (
        (images.detach() * 255)
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
        .permute(0, 2, 3, 1)
        .cpu()
        .numpy()
    )


def _from_uint8_hwc(arrays: list[np.ndarray], like: torch.Tensor) -> torch.Tensor:
    """List of (H, W, 3) uint8 -> (B, 3, H, W) float [0, 1] with ``like``'s dtype and device."""
    stacked = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return stacked.to(device=like.device, dtype=like.dtype) / 255


class Inpainter(abc.ABC):
    """Base of all inpainters: input checks, hole dilation, edge cases and compositing.

    Subclasses implement :meth:`_fill` only; it sees images that each have at least one hole
    pixel and one known pixel, and may return anything of the right shape: only hole pixels of
    its result are kept.

    Args:
        dilate: pixels by which the binarised hole is grown before filling, ``>= 0``.
        all_hole: what to do with an image whose dilated hole covers every pixel: ``"gray"``
            (fill with 0.5 and log a warning) or ``"raise"`` (:class:`AllHoleError`).

    Raises:
        ConfigError: ``dilate`` is not an int ``>= 0`` or ``all_hole`` is not a known policy.
    """

    name: ClassVar[str] = "base"

    def __init__(self, dilate: int = 3, all_hole: str = "gray") -> None:
        if isinstance(dilate, bool) or not isinstance(dilate, int) or dilate < 0:
            raise ConfigError(f"dilate must be an int >= 0, got {dilate!r}")
        if all_hole not in ALL_HOLE_POLICIES:
            raise ConfigError(
                f"all_hole must be one of {', '.join(ALL_HOLE_POLICIES)}, got {all_hole!r}"
            )
        self.dilate = dilate
        self.all_hole = all_hole

    def config(self) -> dict[str, Any]:
        """Name and settings, plain values, to store next to outputs."""
        return {"name": self.name, "dilate": self.dilate, "all_hole": self.all_hole}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def hole_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The region this inpainter changes: ``mask > 0.5`` dilated by ``self.dilate``.

        Args:
            mask: ``(B, 1, H, W)`` float (or bool) mask, 1 = hole.

        Returns:
            ``(B, 1, H, W)`` float32 mask in ``{0, 1}`` on ``mask``'s device.

        Raises:
            ConfigError: ``mask`` is not a 4-D floating or bool tensor.
        """
        if not isinstance(mask, torch.Tensor) or mask.ndim != 4:
            raise ConfigError(f"mask must be a (B, 1, H, W) tensor, got {_describe(mask)}")
        binary = (mask > 0.5).to(torch.float32)
        return dilate_mask(binary, self.dilate)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Fill the (dilated) hole of every image.

        Args:
            image: ``(B, 3, H, W)`` float in ``[0, 1]``.
            mask: ``(B, 1, H, W)`` float in ``[0, 1]`` (or bool), 1 = hole; binarised at 0.5.

        Returns:
            ``(B, 3, H, W)`` of ``image``'s dtype and device, in ``[0, 1]``; bit-identical to
            ``image`` wherever :meth:`hole_mask` is 0.

        Raises:
            ConfigError: wrong types, shapes (the message names both shapes) or devices.
            AllHoleError: an image's dilated hole covers it entirely and ``all_hole="raise"``.
            InpainterOutputError: a pluggable model returned the wrong shape or non-finite values.
        """
        _check_inputs(image, mask)
        with torch.no_grad():
            hole = self.hole_mask(mask).bool()
            flat = hole.flatten(1)
            has_hole, all_hole = flat.any(dim=1).cpu(), flat.all(dim=1).cpu()
            out = image.clone()
            if bool(all_hole.any()):
                full = all_hole.nonzero().flatten().tolist()
                if self.all_hole == "raise":
                    raise AllHoleError(
                        f"the dilated hole (dilate={self.dilate}) covers all of image(s) {full} "
                        f"of shape {tuple(image.shape[1:])}: no known pixel to inpaint from"
                    )
                logger.warning(
                    "%s: the dilated hole covers all of image(s) %s; filling them with gray 0.5",
                    self.name,
                    full,
                )
                out[all_hole.to(image.device)] = 0.5
            todo = has_hole & ~all_hole
            if not bool(todo.any()):
                return out
            if bool(todo.all()):
                sub_image, sub_hole = image, hole
            else:
                idx = todo.nonzero().flatten().to(image.device)
                sub_image, sub_hole = image[idx], hole[idx]
            filled = self._fill(sub_image, sub_hole.to(image.dtype))
            filled = filled.to(device=image.device, dtype=image.dtype).clamp(0.0, 1.0)
            result = torch.where(sub_hole, filled, sub_image)
            if bool(todo.all()):
                return result
            out[idx] = result
            return out

    @abc.abstractmethod
    def _fill(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """Fill ``hole`` (``(b, 1, H, W)`` in ``{0, 1}``, image dtype) of ``image`` (``(b, 3, H, W)``).

        Every image has at least one hole and one known pixel. Returns ``(b, 3, H, W)``; only
        its hole pixels are used.
        """


@INPAINTERS.register("gray")
class GrayInpainter(Inpainter):
    """Constant gray fill (paper ablation).

    Args:
        value: gray level in ``[0, 1]``.
        dilate, all_hole: see :class:`Inpainter`.

    Raises:
        ConfigError: ``value`` outside ``[0, 1]`` or a bad base argument.
    """

    name = "gray"

    def __init__(self, value: float = 0.5, dilate: int = 3, all_hole: str = "gray") -> None:
        super().__init__(dilate, all_hole)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"value must be a number in [0, 1], got {value!r}")
        self.value = float(value)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "value": self.value}

    def _fill(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return fill_gray(image, hole, self.value)


@INPAINTERS.register("mean")
class MeanInpainter(Inpainter):
    """Fill with the mean colour of each image's known pixels (paper ablation).

    Args:
        dilate, all_hole: see :class:`Inpainter`.
    """

    name = "mean"

    def _fill(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return fill_mean(image, hole)


def _generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an int or None, got {seed!r}")
    return torch.Generator().manual_seed(seed)


@INPAINTERS.register("noise")
class NoiseInpainter(Inpainter):
    """Uniform noise fill in ``[0, 1]`` (paper ablation).

    Args:
        seed: seeds a private CPU generator, so a sequence of calls replays exactly; None draws
            from torch's global generator.
        dilate, all_hole: see :class:`Inpainter`.

    Raises:
        ConfigError: ``seed`` is not an int or None, or a bad base argument.
    """

    name = "noise"

    def __init__(self, seed: int | None = None, dilate: int = 3, all_hole: str = "gray") -> None:
        super().__init__(dilate, all_hole)
        self.seed = seed
        self._generator = _generator(seed)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "seed": self.seed}

    def _fill(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return fill_noise(image, hole, self._generator)


@INPAINTERS.register("patch_scramble")
class PatchScrambleInpainter(Inpainter):
    """Randomly permuted patches of the image's known background (paper ablation).

    See :func:`abs_ray.ops.scramble.patch_scramble`.

    Args:
        patch: patch side in pixels, ``>= 1`` (16 is a 14-px detector patch plus margin).
        seed: seeds a private CPU generator; None uses torch's global one.
        dilate, all_hole: see :class:`Inpainter`.

    Raises:
        ConfigError: ``patch`` not a positive int, ``seed`` not an int or None, or a bad base
            argument.
    """

    name = "patch_scramble"

    def __init__(
        self, patch: int = 16, seed: int | None = None, dilate: int = 3, all_hole: str = "gray"
    ) -> None:
        super().__init__(dilate, all_hole)
        if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
            raise ConfigError(f"patch must be an int >= 1, got {patch!r}")
        self.patch = patch
        self.seed = seed
        self._generator = _generator(seed)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "patch": self.patch, "seed": self.seed}

    def _fill(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return patch_scramble(image, hole, self.patch, self._generator)


@INPAINTERS.register("telea")
class TeleaInpainter(Inpainter):
    """OpenCV's fast-marching inpainting (Telea 2004), per image on CPU via uint8.

    Args:
        radius: neighbourhood radius in pixels, ``>= 1``.
        dilate, all_hole: see :class:`Inpainter`.

    Raises:
        ConfigError: ``radius`` is not a positive int, or a bad base argument.
    """

    name = "telea"

    def __init__(self, radius: int = 3, dilate: int = 3, all_hole: str = "gray") -> None:
        super().__init__(dilate, all_hole)
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
            raise ConfigError(f"radius must be an int >= 1, got {radius!r}")
        self.radius = radius

    def config(self) -> dict[str, Any]:
        return {**super().config(), "radius": self.radius}

    def _fill(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        import cv2

        pixels = _to_uint8_hwc(image)
        holes = (hole[:, 0] > 0).to(torch.uint8).mul(255).cpu().numpy()
        filled = [
            cv2.inpaint(np.ascontiguousarray(p), h, self.radius, cv2.INPAINT_TELEA)
            for p, h in zip(pixels, holes, strict=True)
        ]
        return _from_uint8_hwc(filled, image)


# pypatchmatch keeps its random seed in global native state: a seeded fill holds this lock from
# setting the seed to the end of the fill, so threads sharing the process replay exactly.
_PATCHMATCH_LOCK = threading.Lock()


@INPAINTERS.register("patchmatch")
class PatchMatchInpainter(Inpainter):
    """PatchMatch inpainting (``pypatchmatch``): copies texture from the known background.

    Runs per image on CPU on uint8 pixels (about 0.3 s for a 224² image with a bird-sized
    hole, one core); the result is moved back to the input's device. Seeded fills in threads of
    one process run one at a time (the library's seed is global); use processes to scale.

    Args:
        patch_size: patch *radius* in pixels (patches span ``2 * patch_size + 1``), ``>= 1``.
            Time grows quickly with it: 3 is the library's recommended value.
        seed: seed of the randomised search, set before every image so results replay; None
            leaves the library's state alone.
        dilate, all_hole: see :class:`Inpainter`.

    Raises:
        ConfigError: ``patch_size`` not a positive int, ``seed`` not an int or None, or a bad
            base argument.
        AssetUnavailableError: ``pypatchmatch`` is not installed or its library cannot load.
    """

    name = "patchmatch"

    def __init__(
        self, patch_size: int = 3, seed: int | None = 0, dilate: int = 3, all_hole: str = "gray"
    ) -> None:
        super().__init__(dilate, all_hole)
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ConfigError(f"patch_size must be an int >= 1, got {patch_size!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"seed must be an int or None, got {seed!r}")
        self.patch_size = patch_size
        self.seed = seed
        self._patchmatch = _import_patchmatch()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "patch_size": self.patch_size, "seed": self.seed}

    def _fill(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        pixels = _to_uint8_hwc(image)
        holes = (hole[:, 0] > 0).to(torch.uint8).mul(255).cpu().numpy()
        filled = []
        for p, h in zip(pixels, holes, strict=True):
            if self.seed is None:
                filled.append(self._patchmatch.inpaint(p, h, patch_size=self.patch_size))
                continue
            with _PATCHMATCH_LOCK:
                self._patchmatch.set_random_seed(self.seed)
                filled.append(self._patchmatch.inpaint(p, h, patch_size=self.patch_size))
        return _from_uint8_hwc(filled, image)


def _import_patchmatch():
    try:
        import patchmatch
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise AssetUnavailableError(
            f"the patchmatch inpainter needs the 'pypatchmatch' package: {exc}"
        ) from exc
    if not patchmatch.patchmatch_available:  # pragma: no cover
        raise AssetUnavailableError("pypatchmatch is installed but its native library cannot load")
    return patchmatch


def _as_device(device: torch.device | str) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid device {device!r}: {exc}") from exc


@INPAINTERS.register("torchscript")
class TorchScriptInpainter(Inpainter):
    """Any TorchScript inpainting model at a URI, run batched on a device.

    The module must implement ``forward(image, mask) -> image`` with ``image``
    ``(B, 3, H, W)`` float in ``[0, 1]`` and ``mask`` ``(B, 1, H, W)`` float in ``{0, 1}``
    (1 = hole). It receives the image with the (dilated) hole already **zeroed**, so it cannot
    see the removed object, and the dilated hole as mask. Its output is clamped to ``[0, 1]``
    and composited so that only hole pixels change. This is how a learned inpainter (e.g. an
    AOT-GAN or LaMa exported with ``torch.jit.script``/``trace``) is plugged in; any resizing
    or normalisation it needs belongs inside the exported module.

    Args:
        uri: local path or ``s3://bucket/key`` of a file written by ``torch.jit.save``.
        device: where the module runs; inputs are moved there and results moved back.
        s3: S3 settings; None reads the standard AWS environment.
        dilate, all_hole: see :class:`Inpainter`.

    Raises:
        ConfigError: ``device`` is invalid, the file is not a TorchScript module, or a bad base
            argument.
        StorageNotFoundError: there is no file at ``uri``.
        StorageError: it cannot be read.
    """

    name = "torchscript"

    def __init__(
        self,
        uri: str,
        device: torch.device | str = "cpu",
        s3: S3Options | None = None,
        dilate: int = 3,
        all_hole: str = "gray",
    ) -> None:
        super().__init__(dilate, all_hole)
        if not isinstance(uri, str) or not uri:
            raise ConfigError(f"uri must be a non-empty str, got {uri!r}")
        self.uri = uri
        self.device = _as_device(device)
        data = read_bytes(uri, s3)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message=".*jit.*deprecated", category=FutureWarning
                )
                module = torch.jit.load(io.BytesIO(data), map_location=self.device)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"{uri} is not a loadable TorchScript module: {exc}") from exc
        self.module = module.eval()
        logger.info("loaded TorchScript inpainter %s on %s", uri, self.device)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "uri": self.uri, "device": str(self.device)}

    def _fill(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        x = image.to(self.device)
        m = hole.to(self.device)
        with torch.inference_mode():
            out = self.module(x * (1 - m), m)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x.shape):
            raise InpainterOutputError(
                f"TorchScript inpainter {self.uri} must return a tensor of shape "
                f"{tuple(x.shape)}, got {_describe(out)}"
            )
        if not out.is_floating_point() or not bool(torch.isfinite(out).all()):
            raise InpainterOutputError(
                f"TorchScript inpainter {self.uri} returned non-finite or non-float values "
                f"({out.dtype})"
            )
        return out.to(device=image.device, dtype=image.dtype)


def inpainter_names() -> tuple[str, ...]:
    """Registered inpainter names, sorted."""
    return INPAINTERS.names()


def create_inpainter(name: str = DEFAULT_INPAINTER, **kwargs: Any) -> Inpainter:
    """Build a registered inpainter by name.

    Args:
        name: one of :func:`inpainter_names` (default ``"patchmatch"``).
        **kwargs: arguments of that inpainter's class (e.g. ``dilate=4``; ``uri=...`` for
            ``torchscript``).

    Returns:
        The :class:`Inpainter`.

    Raises:
        ConfigError: ``name`` is unknown (the message lists the known names), an argument is
            not accepted (the message lists the accepted ones), or a value is out of range.

    Example:
        >>> create_inpainter("gray", value=0.25)
        GrayInpainter(dilate=3, all_hole='gray', value=0.25)
        >>> create_inpainter("lama")
        Traceback (most recent call last):
            ...
        abs_ray.errors.ConfigError: unknown inpainter 'lama'; known: gray, mean, noise, patch_scramble, patchmatch, telea, torchscript
    """
    factory = INPAINTERS.get(name)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(factory).parameters if p != "self"]
        raise ConfigError(
            f"inpainter {name!r} does not accept {sorted(kwargs)}: {exc}; accepted: "
            f"{', '.join(accepted)}"
        ) from None
    return factory(**kwargs)
