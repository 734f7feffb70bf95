"""Data set layouts, the one manifest they are read into, and benchmark generators.

- :mod:`~abs_ray.data.manifest`: the manifest DataFrame (columns, validation, CSV/Parquet).
- :mod:`~abs_ray.data.layouts`: Waterbirds, manifest files and class folders, local or
  ``s3://``, detected by :func:`load_dataset`; :func:`write_waterbirds` for generators.
- :mod:`~abs_ray.data.files`: a data set's files listed and read inside its root
  (:func:`read_data_file` refuses links out of it, directories, pipes, oversized files).
- :mod:`~abs_ray.data.synthetic`: a seconds-fast synthetic shapes-on-textures benchmark.
- :mod:`~abs_ray.data.birds`: the offline Waterbirds-like birds benchmark built from Debian
  photo packages (``make assets``, then ``python -m abs_ray.data.birds --out data/birds``).

Imports neither Ray nor torch.
"""

from abs_ray.data.birds import (
    GROUP_NAMES,
    Asset,
    BirdAssets,
    BirdsConfig,
    PasteParams,
    build_birds,
    compose_bird,
    contact_sheet,
    fetch_assets,
    split_assets,
    split_group_table,
    write_birds,
)
from abs_ray.data.files import data_root, read_data_file
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
    MANIFEST_SCHEMA,
    SPLITS,
    hash_val_split,
    manifest_to_arrow,
    read_manifest_file,
    validate_manifest,
    write_manifest,
)
from abs_ray.data.synthetic import SyntheticConfig, generate_synthetic, write_synthetic

__all__ = [
    "GROUP_NAMES",
    "IMAGE_SUFFIXES",
    "MANIFEST_COLUMNS",
    "MANIFEST_SCHEMA",
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
    "data_root",
    "fetch_assets",
    "generate_synthetic",
    "hash_val_split",
    "load_dataset",
    "manifest_to_arrow",
    "read_class_folders",
    "read_data_file",
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
