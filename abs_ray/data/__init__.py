"""Data set layouts, the one manifest they are read into, and benchmark generators.

- :mod:`~abs_ray.data.manifest`: the manifest DataFrame (columns, validation, CSV/Parquet).
- :mod:`~abs_ray.data.layouts`: Waterbirds, manifest files and class folders, local or
  ``s3://``, detected by :func:`load_dataset`; :func:`write_waterbirds` for generators.
- :mod:`~abs_ray.data.synthetic`: a seconds-fast synthetic shapes-on-textures benchmark.
- :mod:`~abs_ray.data.birds`: the offline Waterbirds-like birds benchmark built from Debian
  photo packages (``python -m abs_ray.data.birds --out data/birds``).

Imports neither Ray nor torch.
"""

from abs_ray.data.layouts import (
    IMAGE_SUFFIXES,
    Sample,
    load_dataset,
    read_class_folders,
    read_waterbirds,
    write_waterbirds,
)
from abs_ray.data.manifest import (
    MANIFEST_COLUMNS,
    SPLITS,
    read_manifest_file,
    validate_manifest,
    write_manifest,
)
from abs_ray.data.synthetic import SyntheticConfig, generate_synthetic, write_synthetic

# The birds names are imported on first use, so that ``python -m abs_ray.data.birds`` does not
# find its own module already imported by this package (runpy warns about that).
_BIRDS_NAMES = (
    "GROUP_NAMES",
    "Asset",
    "BirdAssets",
    "BirdsConfig",
    "PasteParams",
    "build_birds",
    "compose_bird",
    "contact_sheet",
    "fetch_assets",
    "split_assets",
    "split_group_table",
    "write_birds",
)


def __getattr__(name: str):
    if name in _BIRDS_NAMES:
        from abs_ray.data import birds

        return getattr(birds, name)
    raise AttributeError(f"module 'abs_ray.data' has no attribute {name!r}")


__all__ = [
    "GROUP_NAMES",
    "IMAGE_SUFFIXES",
    "MANIFEST_COLUMNS",
    "SPLITS",
    "Asset",
    "BirdAssets",
    "BirdsConfig",
    "PasteParams",
    "Sample",
    "SyntheticConfig",
    "build_birds",
    "compose_bird",
    "contact_sheet",
    "fetch_assets",
    "generate_synthetic",
    "load_dataset",
    "read_class_folders",
    "read_manifest_file",
    "read_waterbirds",
    "split_assets",
    "split_group_table",
    "validate_manifest",
    "write_birds",
    "write_manifest",
    "write_synthetic",
    "write_waterbirds",
]
