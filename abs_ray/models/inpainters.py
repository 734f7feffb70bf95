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

Each entry declares what it needs (:func:`inpainter_spec`): whether it runs a model that
wants a GPU (``uses_gpu``), the arguments a configuration may give, and those the runtime
fills in (``device``, ``s3``; :func:`runtime_kwargs`). Pipelines, stages and preflight decide
GPU use and validate configurations from that declaration, never from the name.

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

import dataclasses
import inspect
import io
import logging
import threading
import warnings
from typing import Any

import numpy as np
import torch

from abs_ray.devices import resolve_device
from abs_ray.errors import AssetUnavailableError, ConfigError
from abs_ray.io import S3Options, read_bytes
from abs_ray.models._registry import Registry
from abs_ray.models.inpainter_base import (
    DEFAULT_INPAINTER,
    AllHoleError,
    Inpainter,
    InpainterOutputError,
    InpaintingError,
    _describe,
)
from abs_ray.ops.convert import to_float_chw, to_uint8_hwc
from abs_ray.ops.fill import fill_gray, fill_mean, fill_noise
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
    "InpainterSpec",
    "TorchScriptInpainter",
    "check_inpainter",
    "create_inpainter",
    "inpainter_names",
    "inpainter_spec",
    "runtime_kwargs",
]

logger = logging.getLogger(__name__)

#: One registry of inpainters: here, with the registrations (importing this module twice,
#: as pytest's doctest collection does, then makes a new registry, not a duplicate name).
INPAINTERS: Registry[Inpainter] = Registry("inpainter")


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

        pixels = to_uint8_hwc(image.detach()).cpu().numpy()
        holes = (hole[:, 0] > 0).to(torch.uint8).mul(255).cpu().numpy()
        filled = [
            cv2.inpaint(np.ascontiguousarray(p), h, self.radius, cv2.INPAINT_TELEA)
            for p, h in zip(pixels, holes, strict=True)
        ]
        return to_float_chw(np.stack(filled), image.device, image.dtype)


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
        pixels = to_uint8_hwc(image.detach()).cpu().numpy()
        holes = (hole[:, 0] > 0).to(torch.uint8).mul(255).cpu().numpy()
        filled = []
        for p, h in zip(pixels, holes, strict=True):
            if self.seed is None:
                filled.append(self._patchmatch.inpaint(p, h, patch_size=self.patch_size))
                continue
            with _PATCHMATCH_LOCK:
                self._patchmatch.set_random_seed(self.seed)
                filled.append(self._patchmatch.inpaint(p, h, patch_size=self.patch_size))
        return to_float_chw(np.stack(filled), image.device, image.dtype)


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
    uses_gpu = True
    runtime_args = ("device", "s3")

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
        self.device = resolve_device(device)
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


@dataclasses.dataclass(frozen=True)
class InpainterSpec:
    """What a registered inpainter declares.

    Attributes:
        name: its registered name.
        uses_gpu: it runs a model that gains from a GPU.
        arguments: the arguments its constructor accepts.
        runtime_args: those the runtime fills in when a configuration leaves them out.
    """

    name: str
    uses_gpu: bool
    arguments: tuple[str, ...]
    runtime_args: tuple[str, ...]


def inpainter_spec(name: str) -> InpainterSpec:
    """The declaration of the inpainter registered as ``name``.

    Raises:
        ConfigError: ``name`` is unknown (the message lists the known names).

    >>> inpainter_spec("torchscript").uses_gpu, inpainter_spec("telea").uses_gpu
    (True, False)
    """
    factory = INPAINTERS.get(name)
    arguments = tuple(p for p in inspect.signature(factory).parameters if p != "self")
    return InpainterSpec(
        name=name,
        uses_gpu=bool(getattr(factory, "uses_gpu", False)),
        arguments=arguments,
        runtime_args=tuple(getattr(factory, "runtime_args", ())),
    )


def check_inpainter(name: str, kwargs: dict[str, Any] | None = None) -> InpainterSpec:
    """Check a name and its arguments against the declaration, building nothing.

    Raises:
        ConfigError: ``name`` is unknown, or an argument is not one it declares.

    >>> check_inpainter("gray", {"colour": 1})
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: inpainter 'gray' does not accept ['colour']; accepted: value, dilate, all_hole
    """
    INPAINTERS.check(name, kwargs)
    return inpainter_spec(name)


def runtime_kwargs(name: str, kwargs: dict[str, Any] | None = None, **runtime: Any) -> dict:
    """``kwargs`` plus the ``runtime`` values (e.g. ``device``, ``s3``) that the inpainter
    ``name`` declares as runtime arguments and ``kwargs`` leaves out.

    >>> runtime_kwargs("torchscript", {"uri": "m.pt"}, device="cuda")
    {'uri': 'm.pt', 'device': 'cuda'}
    >>> runtime_kwargs("telea", {"radius": 5}, device="cuda")
    {'radius': 5}
    """
    declared = inpainter_spec(name).runtime_args
    out = dict(kwargs or {})
    for key, value in runtime.items():
        if key in declared:
            out.setdefault(key, value)
    return out


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
    return INPAINTERS.create(name, **kwargs)
