"""Fixtures of the detector training tests: one thread, a small synthetic data set with exact
masks, and a fast ``test_tiny`` recipe."""

import dataclasses

import pytest
import torch

from abs_ray.models.detector_train import AugmentConfig, DetectorTrainConfig


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and spinning ones slow shared cores."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="package")
def synthetic(tmp_path_factory):
    """A small synthetic data set with exact masks: 64 train, 8 val, 32 test at 64 px."""
    from abs_ray.data import SyntheticConfig, load_dataset, write_synthetic

    root = str(tmp_path_factory.mktemp("synthetic"))
    write_synthetic(root, SyntheticConfig(n_train=64, n_val=8, n_test=32, size=64, seed=0))
    return root, load_dataset(root)


@pytest.fixture
def geometry_only() -> AugmentConfig:
    """Geometry without colour changes: an image painted from its grid stays its grid."""
    return dataclasses.replace(
        AugmentConfig(), brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, grayscale=0.0
    )


@pytest.fixture
def tiny_cfg():
    """Factory ``tiny_cfg(out, **overrides) -> DetectorTrainConfig``: test_tiny, 64 px, G = 8,
    the paper's pooled head and SGD recipe."""

    def make(out: str, **overrides) -> DetectorTrainConfig:
        values = dict(
            out=out,
            backbone="test_tiny",
            grid=8,
            image_size=64,
            num_labelled=64,
            eval_max=32,
            epochs=40,
            batch_size=16,
            # the paper's recipe (the library default is the dense head, AdamW, one-cycle on a
            # frozen backbone: test_dense.py)
            head="pooled",
            optimizer="sgd",
            schedule="plateau",
            freeze_backbone=False,
            feature_cache_views=16,
            min_balanced_accuracy=0.0,  # the floor has its own tests (test_dense.py)
            lr=1.0,
            backbone_lr=0.1,
            early_stop_patience=40,
            sheet_samples=6,
            log_every=20,
            seed=2,
        )
        return DetectorTrainConfig(**{**values, **overrides})

    return make
