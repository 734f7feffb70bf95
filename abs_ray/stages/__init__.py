"""Ray Data callables: thin per-batch functions and classes that call ``ops`` and ``models``.

Each takes and returns ``dict[str, np.ndarray]`` batches and can be called on a hand-made batch
without Ray, which is how the unit tests exercise them.
"""

from abs_ray.stages.load import ERROR_COLUMNS, LoadImages

__all__ = ["ERROR_COLUMNS", "LoadImages"]
