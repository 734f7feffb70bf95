"""Fixtures of the Serve tests: the repo's Serve config and synthetic images with known masks."""

from __future__ import annotations

from pathlib import Path

import pytest

from abs_ray.data.synthetic import SyntheticConfig, generate_synthetic

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where ``deployments/`` is importable from)."""
    return ROOT


@pytest.fixture(scope="session")
def serve_config_path() -> Path:
    """``deployments/serve_config.yaml``."""
    return ROOT / "deployments" / "serve_config.yaml"


@pytest.fixture(scope="session")
def synthetic_samples():
    """Four 64-px synthetic samples (image, exact mask, clean background), both classes."""
    cfg = SyntheticConfig(n_train=0, n_val=0, n_test=4, size=64, seed=11)
    return list(generate_synthetic(cfg))


@pytest.fixture(scope="session")
def sample(synthetic_samples):
    """One synthetic sample with its exact mask (255 = object)."""
    return synthetic_samples[0]
