"""abs-ray: AutoBackSwap (automated background swapping) as a distributed service on Ray.

Importing this package is cheap: it imports neither Ray nor torch. Subpackages:

- ``abs_ray.ops``: pure batched tensor functions (patch labels, masks, compositing, metrics)
- ``abs_ray.io``: URIs, object storage, safe image decode/encode
- ``abs_ray.data``: data set layouts, manifests, synthetic and offline birds benchmarks
"""

from abs_ray.errors import AbsRayError

__all__ = ["AbsRayError", "__version__"]
__version__ = "0.1.0"
