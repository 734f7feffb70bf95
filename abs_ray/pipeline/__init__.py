"""The main job: detector → disentangle (→ train), streamed through Ray Data.

Stages (``PipelineConfig.stages``, default all, in this order):

1. ``detector`` — train the patch detector from patch labels (an ``info,mask`` CSV, or the
   data set's masks by coverage threshold), or load a given checkpoint. Training runs as one
   Ray task (on a GPU when the cluster has one). ``mask_source="saliency"`` needs no detector:
   a zero-shot border-contrast saliency model makes the patch grid (untrained, and every
   output says so); ``"truth"`` uses the data set's own masks (the oracle).
2. ``disentangle`` — stream every image of the data set from storage through Ray Data:
   decode (tasks) → detector (actor pool) → masks + inpainting + PNG encoding (its own actor
   pool) → write. Models load once per actor.
3. ``train`` — train the classifier on the committed ``data/`` (Ray Train, MLflow).

:func:`run` is :func:`abs_ray.preflight.preflight` (every name, setting, location and the data
set checked, before Ray starts and before the output is touched) then :func:`execute`.

Outputs under ``cfg.out`` (local folder or ``s3://`` prefix):

- ``detector/`` — ``detector.pt``, ``metrics.json``, ``mask_sheet.png`` (when trained here);
- ``data/`` — the disentangled data set, Parquet shards readable by Ray Data: id, source uri,
  label, split, group/place, ``foreground_png`` (RGBA: image + tight alpha),
  ``background_png`` (inpainted), ``patch_prob`` (the G² grid of P(background)), and the
  detector/mask source/inpainter/code versions that made them. Optional columns keep their
  type (``mask_uri`` string, ``group``/``place`` int64) when every value is missing;
- ``errors/`` — one record per input that failed: id, uri, stage, error type, message;
- ``swap_preview.png`` — a few foregrounds swapped onto other backgrounds;
- ``train/`` — the train stage's runs;
- ``manifest.json`` — what is on disk: resolved config, code version, detector, counts
  (``input = ok + errors``), errors by type, seconds and images/s per stage, the train stage,
  and ``faults``: per stage what the cluster did meanwhile (nodes lost, failed task attempts
  Ray retried, actors restarted, training restarts; see :mod:`abs_ray.faults`).

Losing a node: Ray Data retries the decode and write tasks and restarts the pool actors of a
lost node elsewhere (its defaults in Ray 2.60: ``max_retries=-1`` for tasks,
``max_restarts=-1`` and ``max_task_retries=-1`` for actor pools), and rebuilds lost blocks
from lineage; the writes are idempotent (:mod:`abs_ray.stages.sink`), so every id still ends
up once in ``data/`` or ``errors/``. Training restarts its workers from the last checkpoint
(``TrainConfig.max_failures``). On more than one node, data and output must be on shared
storage (``s3://``).

A run writes into its own attempt folder ``<out>/_staging/<run_id>/`` and replaces the
previous output only once it is complete (:mod:`abs_ray.staging`): a failed or killed run
leaves the previous output as it was. ``resume`` continues the newest unfinished attempt
(ids already written are skipped, a trained detector is reused); with none, it fills in what
the committed output lacks, or does nothing when it is complete.
"""

from __future__ import annotations

from abs_ray.pipeline.config import DEMO_DATA, MASK_SOURCES, STAGES, PipelineConfig, PoolConfig
from abs_ray.pipeline.detector_stage import run_detector_stage
from abs_ray.pipeline.disentangle_stage import run_disentangle_stage, stage_geometry
from abs_ray.pipeline.preview import read_disentangled, swap_preview
from abs_ray.pipeline.run import execute, prepare_data, run
from abs_ray.pipeline.summary import (
    EMPTY_MASK_WARNING,
    MIN_TIMED_SECONDS,
    WEAK_DETECTOR,
    errors_by_type,
    mask_summary,
    stage_rates,
)
from abs_ray.pipeline.train_stage import run_train_stage
from abs_ray.version import code_version

__all__ = [
    "DEMO_DATA",
    "EMPTY_MASK_WARNING",
    "MASK_SOURCES",
    "MIN_TIMED_SECONDS",
    "PipelineConfig",
    "PoolConfig",
    "STAGES",
    "WEAK_DETECTOR",
    "code_version",
    "errors_by_type",
    "execute",
    "mask_summary",
    "prepare_data",
    "read_disentangled",
    "run",
    "run_detector_stage",
    "run_disentangle_stage",
    "run_train_stage",
    "stage_geometry",
    "stage_rates",
    "swap_preview",
]
