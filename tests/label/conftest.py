"""Fixtures of the labelling-app tests: a synthetic data set in S3 and real servers on 127.0.0.1.

Each server is uvicorn in a thread on a free port, stopped (and its session's threads joined)
when the test ends.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import torch
import uvicorn

from abs_ray.data import SyntheticConfig, write_synthetic
from abs_ray.io import decode_image, read_bytes
from abs_ray.label import LabelConfig
from abs_ray.label.app import create_app
from abs_ray.label.session import LabelSession
from abs_ray.models.detector_train import DetectorTrainConfig
from abs_ray.ops.patches import mask_to_patch_labels

GRID = 8
SIZE = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_data(s3_server):
    """``(bucket URI, data URI, manifest)``: 20 synthetic train images (64 px, exact masks)."""
    name = f"lbl-{uuid.uuid4().hex[:10]}"
    s3_server.boto3_client().create_bucket(Bucket=name)
    data = f"s3://{name}/data"
    manifest = write_synthetic(
        data, SyntheticConfig(n_train=20, n_val=0, n_test=0, size=SIZE, seed=3), s3_server
    )
    return f"s3://{name}", data, manifest


def _tiny_config(data: str, labels: str, **overrides) -> LabelConfig:
    """A labelling config with a fast retraining recipe (``test_tiny``, 64 px, G = 8)."""
    train = DetectorTrainConfig(
        out="unset",
        backbone="test_tiny",
        weights=None,
        grid=GRID,
        image_size=SIZE,
        epochs=12,
        batch_size=8,
        head="pooled",  # the paper's recipe, as before the dense default
        optimizer="sgd",
        schedule="plateau",
        freeze_backbone=False,
        allow_weak_detector=True,
        lr=1.0,
        backbone_lr=0.1,
        early_stop_patience=12,
        num_labelled=None,
        eval_split=None,
        sheet_samples=0,
        num_workers=2,
        log_every=50,
    )
    values = dict(data=data, labels=labels, grid=GRID, target=10, prior="none", detector=train)
    return LabelConfig(**{**values, **overrides})


@pytest.fixture(scope="session")
def tiny_config():
    """Factory ``tiny_config(data, labels, **overrides) -> LabelConfig`` (test_tiny, G = 8)."""
    return _tiny_config


@pytest.fixture(scope="module")
def true_masks(s3_data, s3_server) -> dict[str, str]:
    """``id -> mask string`` of every image, from its exact mask (coverage 0.25)."""
    out = {}
    for row in s3_data[2].to_dict("records"):
        m = decode_image(read_bytes(row["mask_uri"], s3_server))[..., 0]
        grid = mask_to_patch_labels(torch.from_numpy(m).float()[None] / 255.0, GRID, 0.25)[0]
        out[row["id"]] = "".join("1" if v else "0" for v in grid.flatten().tolist())
    return out


class Server:
    """A :class:`LabelSession` served by uvicorn in a thread; ``url`` is its base URL."""

    def __init__(self, cfg: LabelConfig, s3) -> None:
        self.session = LabelSession(cfg, s3)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            create_app(self.session),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"label server did not start on {self.url}")
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)
        self.session.close(timeout=120)


@pytest.fixture
def serve(s3_server) -> Iterator:
    """Factory ``serve(cfg) -> Server``; every server it started is stopped at teardown."""
    started: list[Server] = []

    def start(cfg: LabelConfig) -> Server:
        server = Server(cfg, s3_server)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()
