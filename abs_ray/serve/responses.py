"""HTTP responses of the swap service: results as PNG or JSON (base64 PNGs), with headers.

The replayable facts of a result travel with it: the seed (``X-Seed``), the mask source, the
bank's fingerprint and each variant's sampled parameters.
"""

from __future__ import annotations

import base64
import json

import numpy as np
from fastapi.responses import JSONResponse, Response

from abs_ray.io import encode_png
from abs_ray.serve.jobs import InpaintResult, MaskResult, SwapResult
from abs_ray.web.errors import InvalidRequestError

__all__ = ["inpaint_response", "mask_response", "swap_response"]


def _b64_png(array: np.ndarray) -> str:
    return base64.b64encode(encode_png(array)).decode("ascii")


def swap_response(result: SwapResult, fmt: str) -> Response:
    """PNG (one variant, ``format`` auto/png) or JSON with base64 PNGs and params of each.

    Raises:
        InvalidRequestError: ``format=png`` with more than one variant.
    """
    as_png = fmt == "png" or (fmt == "auto" and len(result.images) == 1)
    if as_png and len(result.images) != 1:
        raise InvalidRequestError(f"format=png returns one image; n={len(result.images)}")
    headers = {
        "X-Seed": str(result.seed),
        "X-Mask-Source": result.mask_source,
        "X-Foreground-Fraction": f"{result.foreground_fraction:.6f}",
    }
    if result.bank_fingerprint:
        headers["X-Bank-Fingerprint"] = result.bank_fingerprint
    if as_png:
        headers["X-Swap-Params"] = json.dumps(result.params[0], separators=(",", ":"))
        return Response(encode_png(result.images[0]), media_type="image/png", headers=headers)
    height, width = result.images[0].shape[:2]
    body = {
        "seed": result.seed,
        "n": len(result.images),
        "width": width,
        "height": height,
        "mask_source": result.mask_source,
        "foreground_fraction": result.foreground_fraction,
        "bank_fingerprint": result.bank_fingerprint,
        "variants": [
            {"png": _b64_png(image), "params": params}
            for image, params in zip(result.images, result.params, strict=True)
        ],
    }
    return JSONResponse(body, headers=headers)


def mask_response(result: MaskResult, fmt: str) -> Response:
    """The alpha PNG, or JSON with alpha and loose PNGs (base64) and the patch grid.

    The grid is ``patch_prob`` (``G x G`` ``P(background)``) and ``foreground_patches``: a
    string of ``G²`` characters ``0``/``1`` in row-major order, 1 = foreground (``p <
    tight``), the ``mask`` format of the paper's ``info,mask`` label CSV.
    """
    grid = None if result.prob is None else result.prob
    patches = None
    if grid is not None:
        patches = "".join("1" if p < result.tight_threshold else "0" for p in grid.flatten())
    headers = {"X-Mask-Source": result.mask_source}
    if fmt == "png":
        if patches is not None:
            headers["X-Patch-Grid"] = f"{grid.shape[0]}x{grid.shape[1]}:{patches}"
        return Response(encode_png(result.alpha), media_type="image/png", headers=headers)
    height, width = result.alpha.shape
    body = {
        "width": width,
        "height": height,
        "mask_source": result.mask_source,
        "tight": result.tight_threshold,
        "loose": result.loose_threshold,
        "grid": None if grid is None else int(grid.shape[0]),
        "patch_prob": None if grid is None else np.round(grid, 5).tolist(),
        "foreground_patches": patches,
        "foreground_fraction": float((result.alpha > 0).mean()),
        "alpha_png": _b64_png(result.alpha),
        "loose_png": _b64_png(result.loose),
    }
    return JSONResponse(body, headers=headers)


def inpaint_response(result: InpaintResult) -> Response:
    """The completed background as PNG (hole fraction and mask source in headers)."""
    headers = {
        "X-Mask-Source": result.mask_source,
        "X-Hole-Fraction": f"{result.hole_fraction:.6f}",
    }
    return Response(encode_png(result.background), media_type="image/png", headers=headers)
