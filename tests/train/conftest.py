"""Fixtures of the training tests: tiny disentangled data sets written from synthetic samples."""

from __future__ import annotations

import pytest

from abs_ray.data import SyntheticConfig, generate_synthetic
from abs_ray.train import write_disentangled_from_samples

#: 32 train rows (100 % correlated), 8 val, 16 test (4 per group), 32 px.
TINY = SyntheticConfig(n_train=32, n_val=8, n_test=16, size=32, seed=0)


@pytest.fixture(scope="session")
def tiny_run() -> dict:
    """Ray Train settings of a tiny run: the test backbone, two workers at half a CPU each
    (one CPU of a 2-CPU machine left to Ray Data's decoding), an 8-image sample grid."""
    return {
        "backbone": "test_tiny",
        "weights": None,
        "batch_size": 8,
        "num_workers": 2,
        "cpus_per_worker": 0.5,
        "eval_batch_size": 16,
        "lr": 0.05,
        "sample_grid": 8,
    }


@pytest.fixture(scope="session")
def tiny_samples():
    """The samples of :data:`TINY` (image, true mask, clean background)."""
    return list(generate_synthetic(TINY))


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory, tiny_samples) -> str:
    """A local disentangled data set of :data:`TINY` with patch-level alphas (a perfect 8x8
    patch detector) and inline true masks; returns the pipeline-output-like root folder."""
    root = str(tmp_path_factory.mktemp("tiny_set"))
    write_disentangled_from_samples(tiny_samples, root, alpha="patch", grid=8, rows_per_file=20)
    return root


def _devices() -> list[str]:
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.fixture(params=_devices())
def device(request):
    """CPU, and CUDA where present: parametrised over the devices this machine has, so no
    test here is skipped for a missing GPU (overrides the root ``device`` fixture)."""
    import torch

    return torch.device(request.param)
