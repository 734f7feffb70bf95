"""Load and decode the images (and masks) of a manifest batch, one row's failure at a time.

A corrupt, truncated, empty, missing or oversized file never fails the batch: the row keeps
its manifest columns, gets zero pixels and an ``error_type``/``error_message``, and the caller
routes it to ``errors/``. (Ray's ``read_images`` fails the whole job on one bad file.) Files are
read with :func:`abs_ray.data.files.read_data_file`: inside a local data set's root, a link
that leads outside it, a directory, pipe or device named like an image are per-row errors too.
Messages and logs name the file and the reason, never the file's bytes.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from PIL import Image

from abs_ray.data.files import read_data_file
from abs_ray.errors import AbsRayError, ConfigError
from abs_ray.io import DEFAULT_MAX_PIXELS, S3Options, decode_image
from abs_ray.io.image import max_encoded_bytes

logger = logging.getLogger(__name__)

#: Columns added to every row; ``error_type == ""`` means the row loaded.
ERROR_COLUMNS = ("error_stage", "error_type", "error_message")
#: Per-row seconds spent in a stage (batch time / rows it processed; NaN for rows it did not
#: process), summed and counted by the writer.
TIMING_PREFIX = "t_"


class LoadImages:
    """Ray Data batch callable: manifest rows in, decoded fixed-size pixels out.

    Args:
        size: output (H, W); images are resized bilinearly, masks nearest-neighbour.
        s3: S3 settings for ``s3://`` URIs (None: the standard AWS environment of the worker).
        max_pixels: pixel limit checked before decoding.
        masks: also load ``mask_uri`` (a missing mask URI gives an all-zero mask).
        root: the data set's local root (:func:`abs_ray.data.files.data_root`): rows under it
            whose real path leaves it are refused (``OutsideDataRootError``); None: no check.
        max_bytes: larger files are refused unread; None: :func:`~abs_ray.io.image.
            max_encoded_bytes` of ``max_pixels``.

    Output columns added: ``image`` (B, H, W, 3) uint8, ``mask`` (B, H, W) uint8 in {0, 255}
    when ``masks``, and :data:`ERROR_COLUMNS`.

    Example:
        >>> import numpy as np
        >>> from abs_ray.io import encode_png, write_bytes
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp(); good = os.path.join(d, "a.png"); bad = os.path.join(d, "b.png")
        >>> write_bytes(good, encode_png(np.zeros((8, 8, 3), np.uint8))); write_bytes(bad, b"junk")
        >>> out = LoadImages(size=(4, 4), masks=False)({"id": np.array(["a", "b"]), "image_uri": np.array([good, bad])})
        >>> out["image"].shape, list(out["error_type"])
        ((2, 4, 4, 3), ['', 'NotAnImageError'])
    """

    def __init__(
        self,
        size: tuple[int, int],
        s3: S3Options | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        masks: bool = True,
        root: str | None = None,
        max_bytes: int | None = None,
    ) -> None:
        if len(size) != 2 or min(size) <= 0:
            raise ConfigError(f"size must be (H, W) with positive values, got {size}")
        self.size = (int(size[0]), int(size[1]))
        self.s3 = s3
        self.max_pixels = max_pixels
        self.masks = masks
        self.root = root
        self.max_bytes = max_encoded_bytes(max_pixels) if max_bytes is None else max_bytes

    def _load(self, uri: str, mask: bool) -> np.ndarray:
        data = read_data_file(uri, self.root, self.s3, self.max_bytes)
        pixels = decode_image(data, max_pixels=self.max_pixels)
        img = Image.fromarray(pixels[..., 0] if mask else pixels)
        h, w = self.size
        if img.size != (w, h):
            img = img.resize((w, h), Image.NEAREST if mask else Image.BILINEAR)
        out = np.asarray(img)
        return np.where(out >= 128, 255, 0).astype(np.uint8) if mask else out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        n = len(batch["image_uri"])
        h, w = self.size
        images = np.zeros((n, h, w, 3), np.uint8)
        masks = np.zeros((n, h, w), np.uint8)
        stage = np.full(n, "", dtype=object)
        etype = np.full(n, "", dtype=object)
        emsg = np.full(n, "", dtype=object)
        for i in range(n):
            uri = str(batch["image_uri"][i])
            try:
                images[i] = self._load(uri, mask=False)
                mask_uri = batch.get("mask_uri")
                if (
                    self.masks
                    and mask_uri is not None
                    and isinstance(mask_uri[i], str)
                    and mask_uri[i]
                ):
                    uri = str(mask_uri[i])
                    masks[i] = self._load(uri, mask=True)
            except (AbsRayError, OSError) as exc:  # one bad file never stops the batch
                stage[i], etype[i], emsg[i] = "load", type(exc).__name__, f"{uri}: {exc}"
                logger.warning("skipping %s: %s", uri, exc)
        out = dict(batch)
        out["image"] = images
        if self.masks:
            out["mask"] = masks
        out["error_stage"], out["error_type"], out["error_message"] = stage, etype, emsg
        out[TIMING_PREFIX + "load"] = np.full(n, (time.perf_counter() - start) / max(n, 1))
        return out
