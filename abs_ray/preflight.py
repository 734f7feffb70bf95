"""Everything the main job can know before it starts: checked before Ray and before the output.

:func:`preflight` turns a :class:`~abs_ray.pipeline.PipelineConfig` into a :class:`Plan`, or
raises a typed error with a one-line message. It checks, in order: where the output goes
(a relative local path under ``ray job submit`` would land in Ray's temporary copy of the
working directory), that the data set, checkpoint and label file can be read and the output
written, the data set's layout and rows, where the patch grid comes from (labels or masks to
train a detector from, a checkpoint's geometry against the one asked, true masks for
``truth``, the saliency model's weights), the inpainter and its arguments (built once), the
splits the train stage needs, and a resumed run's settings against the stored ones. Only then
does it finish a commit a crash left half done (:mod:`abs_ray.staging`).

Nothing here starts Ray or writes into the output beyond a probe file; a run that fails here
leaves the output as it was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import pandas as pd

from abs_ray.env import in_ray_job
from abs_ray.errors import ConfigError, DatasetError, LabelsRequiredError
from abs_ray.io import (
    S3Options,
    check_readable,
    check_writable,
    copy_tree,
    exists,
    is_remote,
    join,
)
from abs_ray.staging import (
    Attempt,
    committed_manifest,
    finish_interrupted_commits,
    list_attempts,
    start_attempt,
)

logger = logging.getLogger(__name__)

__all__ = ["RESUMABLE_CHANGES", "Plan", "check_output_location", "preflight"]

#: Settings a resumed run may change: how the work is spread, not what it computes.
RESUMABLE_CHANGES = ("resume", "load", "detect", "inpaint", "device", "preview_samples", "train")


@dataclasses.dataclass(frozen=True)
class Plan:
    """A checked run: the resolved config and what :func:`abs_ray.pipeline.execute` needs.

    Attributes:
        cfg: the config with ``data`` filled in (the demo when it was None).
        s3: S3 settings.
        manifest: the data set manifest (with a hash-based val split when it had none).
        size: image side the disentangle stage runs at.
        grid: patches per side.
        checkpoint: the detector checkpoint given (None when trained here or not needed).
        detector_label: what every output row's ``detector`` column says: the checkpoint,
            the committed path of the detector trained here, ``truth``, or the saliency
            source's ``saliency (zero-shot, untrained)``.
        val_split: how val rows were made, when they were (recorded in ``manifest.json``).
        committed: the committed ``manifest.json`` (None when there is none).
        resume_from: the unfinished attempt to continue (``resume``).
        seed_from_committed: ``resume`` with no unfinished attempt: the new attempt starts
            from a copy of the committed output and processes what it lacks.
        up_to_date: ``resume`` of a committed output that already holds every input.
    """

    cfg: Any
    s3: S3Options
    manifest: pd.DataFrame
    size: int
    grid: int
    checkpoint: str | None
    detector_label: str
    val_split: dict | None = None
    committed: dict | None = None
    resume_from: Attempt | None = None
    seed_from_committed: bool = False
    up_to_date: bool = False

    def attempt(self) -> Attempt:
        """The attempt folder to write into: the resumed one, or a new one (seeded)."""
        if self.resume_from is not None:
            logger.info("resume: continuing run %s", self.resume_from.run_id)
            return self.resume_from
        attempt = start_attempt(self.cfg.out, {"config": _normalise(self.cfg.to_dict())}, self.s3)
        if self.seed_from_committed:
            for name in ("detector", "data", "errors"):
                copied = copy_tree(join(self.cfg.out, name), attempt.path(name), self.s3)
                logger.info("resume: %d committed file(s) of %s/ carried over", copied, name)
        elif self.checkpoint and _inside(self.checkpoint, join(self.cfg.out, "detector")):
            # The committed detector this run uses: carried into the new output, which
            # replaces the old one as a whole.
            copy_tree(join(self.cfg.out, "detector"), attempt.path("detector"), self.s3)
        return attempt


def _inside(uri: str, folder: str) -> bool:
    return str(uri).startswith(folder.rstrip("/") + ("/" if is_remote(folder) else os.sep))


def _normalise(d: dict) -> dict:
    """A config dict as it reads back from JSON (tuples → lists, paths → str)."""
    return json.loads(json.dumps(d, sort_keys=True, default=str))


def _changes(stored: dict, now: dict) -> dict[str, tuple[Any, Any]]:
    keys = (set(stored) | set(now)) - set(RESUMABLE_CHANGES)
    return {k: (stored.get(k), now.get(k)) for k in sorted(keys) if stored.get(k) != now.get(k)}


def check_output_location(out: str, environ: dict | None = None) -> None:
    """Refuse a relative local output inside a Ray job.

    ``ray job submit --working-dir .`` runs the entrypoint in a temporary copy of the working
    directory; a relative path resolves there, and the output would vanish with it. Ray does
    not tell the job the submitter's directory, so it cannot be resolved against that.

    Raises:
        ConfigError: ``out`` is a relative local path and this process is a Ray job's driver.

    >>> check_output_location("runs/x", environ={})
    >>> check_output_location("runs/x", environ={"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"})
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: --out 'runs/x' is a relative path, and this job runs under `ray job submit` in a temporary copy of the working directory, where its output would be lost: give an absolute path (e.g. --out "$PWD/runs/x") or an s3:// URI
    """
    if is_remote(out) or str(out).startswith("file:") or os.path.isabs(os.path.expanduser(out)):
        return
    if in_ray_job(environ):
        raise ConfigError(
            f"--out {out!r} is a relative path, and this job runs under `ray job submit` in a "
            "temporary copy of the working directory, where its output would be lost: give "
            f'an absolute path (e.g. --out "$PWD/{out}") or an s3:// URI'
        )


def _check_labels(cfg, manifest: pd.DataFrame) -> None:
    """A detector trained here needs an ``info,mask`` CSV or at least two masked images."""
    t = cfg.detector
    if t.labels is not None:
        return
    pool = manifest[manifest["split"].astype(str) == t.label_split]
    masked = int(pool["mask_uri"].notna().sum())
    if masked < 2:
        raise LabelsRequiredError(
            f"{cfg.data} has no masks to train the detector from ({masked} of {len(pool)} "
            f"{t.label_split} images have one): label patches with `abs-ray label "
            f"--data {cfg.data} --labels labels.csv` and pass --detector.labels labels.csv, or "
            "pass --detector_checkpoint URI, or use --mask_source saliency (zero-shot, untrained)"
        )


def _val_split(cfg, manifest: pd.DataFrame) -> tuple[pd.DataFrame, dict | None]:
    from abs_ray.data import hash_val_split

    splits = set(manifest["split"].astype(str))
    if "val" in splits or not cfg.val_fraction:
        return manifest, None
    manifest, moved = hash_val_split(manifest, cfg.val_fraction)
    note = {
        "rule": "train rows whose sha256(id) falls in the lowest val_fraction go to val",
        "val_fraction": cfg.val_fraction,
        "rows": moved,
    }
    logger.warning(
        "%s has no val split: %d of its train rows become val (by a hash of the id, stable "
        "across runs; val_fraction %.2f)",
        cfg.data,
        moved,
        cfg.val_fraction,
    )
    return manifest, note


def _check_train(cfg, manifest: pd.DataFrame, s3: S3Options) -> None:
    """What the train stage will need, checked now rather than after the disentangle stage."""
    from abs_ray.train.tracking import resolve_tracking_uri

    t = cfg.train
    if is_remote(cfg.out):  # the default sqlite store needs a local folder
        resolve_tracking_uri(t.mlflow_tracking_uri, cfg.out)
    if "disentangle" not in cfg.stages:
        from abs_ray.train.data import scan_disentangled
        from abs_ray.train.run import resolve_config

        if not exists(join(cfg.out, "data"), s3):
            raise ConfigError(
                f"the train stage reads {join(cfg.out, 'data')}, which does not exist: run the "
                "disentangle stage first (or with it)"
            )
        info = scan_disentangled(cfg.out, s3)
        resolve_config(dataclasses.replace(t, data=cfg.out, out=join(cfg.out, "train")), info)
        return
    split = manifest["split"].astype(str)
    if not (split == "val").any():
        raise DatasetError(
            f"{cfg.data} has no val rows and val_fraction is 0: the train stage selects its "
            "model on val; give the data set a val split or a val_fraction > 0"
        )
    n_train = int((split == "train").sum())
    if n_train < t.batch_size:
        raise ConfigError(
            f"the train split has {n_train} images, fewer than one training batch ({t.batch_size})"
        )
    masked = manifest.loc[split == "train", "mask_uri"].notna().all()
    if t.method == "oracle" and not (cfg.mask_source == "truth" or masked):
        raise ConfigError(
            "method 'oracle' needs true masks: every train image needs a mask_uri, or run "
            "with mask_source 'truth'"
        )
    if (
        t.select_by == "val_worst_group_accuracy"
        and manifest.loc[split == "val", "group"].isna().any()
    ):
        raise ConfigError(
            "select_by 'val_worst_group_accuracy' needs a group on every val image; use "
            "'val_accuracy' (the paper's, no group labels needed)"
        )


def _resume(cfg, manifest: pd.DataFrame, committed: dict | None, s3: S3Options) -> dict:
    """Which attempt a ``resume`` continues, or that there is nothing to do."""
    from abs_ray.stages.sink import read_ids

    now = _normalise(cfg.to_dict())
    unfinished = [
        (a, r) for a, r in list_attempts(cfg.out, s3) if r.get("state") in ("running", "failed")
    ]
    if unfinished:
        attempt, record = unfinished[0]
        changes = _changes(record.get("config") or {}, now)
        if changes:
            raise ConfigError(
                f"run {attempt.run_id} in {cfg.out} was started with other settings "
                f"({'; '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in changes.items())}); "
                "resume with the same settings, or run without --resume to start anew"
            )
        return {"resume_from": attempt}
    if committed is None or committed.get("state") != "complete":
        logger.info("resume: nothing to resume in %s; starting a new run", cfg.out)
        return {}
    changes = _changes(committed.get("config") or {}, now)
    if changes:
        raise ConfigError(
            f"{cfg.out} was made with other settings "
            f"({'; '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in changes.items())}); resume "
            "with the same settings, or run without --resume to replace it"
        )
    done = set(read_ids(join(cfg.out, "data"), s3, drop_unreadable=False)) | set(
        read_ids(join(cfg.out, "errors"), s3, drop_unreadable=False)
    )
    missing = set(manifest["id"].astype(str)) - done
    detector_ok = not cfg.trains_detector or exists(join(cfg.out, "detector", "detector.pt"), s3)
    if "disentangle" not in cfg.stages:
        missing = set()
    if not missing and detector_ok:
        return {"up_to_date": True}
    logger.info("resume: %s lacks %d input(s); a new run starts from it", cfg.out, len(missing))
    return {"seed_from_committed": True}


def preflight(cfg, s3: S3Options | None = None) -> Plan:
    """Check a pipeline config against the world; return the :class:`Plan` to execute.

    Args:
        cfg: a :class:`~abs_ray.pipeline.PipelineConfig`.
        s3: S3 settings; default from the environment.

    Returns:
        The plan.

    Raises:
        ConfigError: see :func:`check_output_location`; an explicit image size or grid that
            differs from the checkpoint's; an inpainter argument out of range; a resumed run
            whose settings differ; what the train stage would refuse.
        LabelsRequiredError: a detector would be trained, but there are neither masks nor
            labels.
        StorageNotFoundError / StorageAccessError: data, output, checkpoint, labels or an
            inpainter's model cannot be reached.
        LayoutError / ManifestRowError / DatasetError: the data set cannot be read or is empty.
        WeightsMismatchError / WeightsUnavailableError: a checkpoint that is not one, or
            saliency weights that cannot be loaded.
    """
    from abs_ray.data import load_dataset
    from abs_ray.models import create_inpainter
    from abs_ray.models.inpainters import check_inpainter, runtime_kwargs
    from abs_ray.pipeline import prepare_data, stage_geometry
    from abs_ray.stages.disentangle import SALIENCY_DETECTOR

    s3 = s3 or S3Options.from_env()
    check_output_location(cfg.out)
    if cfg.data is not None:
        check_readable(cfg.data, s3)
    for uri in (
        cfg.detector_checkpoint,
        cfg.detector.labels if cfg.trains_detector else None,
    ):
        if uri:
            check_readable(uri, s3)
    check_writable(cfg.out, s3)
    cfg = prepare_data(cfg, s3)
    manifest = load_dataset(cfg.data, s3)
    if not len(manifest):
        raise DatasetError(f"{cfg.data}: the data set has no images")
    logger.info("data set %s: %d images; output %s", cfg.data, len(manifest), cfg.out)

    if cfg.trains_detector:
        _check_labels(cfg, manifest)
        label = join(cfg.out, "detector", "detector.pt")
    elif cfg.mask_source == "truth":
        if manifest["mask_uri"].isna().all():
            raise ConfigError(
                f"mask_source 'truth' uses the data set's masks, but {cfg.data} has none "
                "(no mask_uri / mask_filename)"
            )
        label = "truth"
    elif cfg.mask_source == "saliency":
        from abs_ray.models.saliency import BorderContrastSaliency

        # Builds it once: weights that cannot load fail here, not in every actor.
        BorderContrastSaliency(grid=cfg.detector.grid, image_size=cfg.detector.image_size)
        label = SALIENCY_DETECTOR
    else:
        label = cfg.detector_checkpoint or "none"
    checkpoint = cfg.detector_checkpoint if cfg.mask_source == "detector" else None
    size, grid, _, _ = stage_geometry(cfg, checkpoint, s3)
    if cfg.writes_data:
        check_inpainter(cfg.inpainter, cfg.inpainter_kwargs)  # names, arguments: declared
        kwargs = runtime_kwargs(cfg.inpainter, cfg.inpainter_kwargs, device="cpu", s3=s3)
        create_inpainter(cfg.inpainter, **kwargs)  # values, files: checked by building it

    manifest, val_split = _val_split(cfg, manifest)
    if "train" in cfg.stages:
        _check_train(cfg, manifest, s3)

    # Everything is checked; only now may the output be touched: complete a commit that a
    # crash left half done, so that what follows sees one consistent output.
    finish_interrupted_commits(cfg.out, s3)
    committed = committed_manifest(cfg.out, s3)
    if not cfg.writes_data and committed is None:
        raise ConfigError(f"{cfg.out} holds no committed output (manifest.json) to train on")
    resume = _resume(cfg, manifest, committed, s3) if cfg.resume and cfg.writes_data else {}
    return Plan(
        cfg=cfg,
        s3=s3,
        manifest=manifest,
        size=size,
        grid=grid,
        checkpoint=checkpoint,
        detector_label=label,
        val_split=val_split,
        committed=committed,
        **resume,
    )
