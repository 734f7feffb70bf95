"""A pipeline output as what the service serves: its background bank and its detector.

The hand-off from the batch job to the service is one value, the pipeline's ``--out``
(a local folder or an ``s3://`` prefix). :func:`open_output` reads what the pipeline
committed there (:mod:`abs_ray.pipeline` writes it, :mod:`abs_ray.staging` commits it):

- ``manifest.json``: must exist and say ``state: complete`` (a run still replacing its
  output, or a folder that never held one, is refused); its code version, run id and counts
  are reported by ``GET /v1/info``;
- ``data/*.parquet``: the rows whose ``background_png`` become the bank
  (:meth:`~abs_ray.serve.bank.BackgroundBank.from_pipeline_output`);
- the detector that made the masks: ``detector/detector.pt`` when the run trained one, else
  the checkpoint the manifest names (a run given ``--detector-checkpoint``); none when the
  run used the zero-shot saliency or the data set's own masks.

Everything is checked before anything is loaded: a bad output is a :class:`ConfigError`
naming the URI and what is missing, raised when the application is deployed (or a reload
is asked for), never on the first request.

Example:
    >>> import json, tempfile
    >>> from abs_ray.io import join, write_text
    >>> out = tempfile.mkdtemp()
    >>> def why(uri):
    ...     try:
    ...         open_output(uri)
    ...     except ConfigError as exc:
    ...         return str(exc).replace(uri, "OUT")
    >>> why(out)[:46]
    'OUT is not a pipeline output: no manifest.json'
    >>> write_text(join(out, "manifest.json"), json.dumps({"state": "replacing"}))
    >>> why(out)[:55]
    "pipeline output OUT is not complete (state 'replacing')"
"""

from __future__ import annotations

import dataclasses
from typing import Any

from abs_ray.errors import AbsRayError, ConfigError
from abs_ray.io import S3Options, exists, join, list_files
from abs_ray.serve.config import ServiceConfig
from abs_ray.staging import committed_manifest

__all__ = ["PipelineOutput", "open_output"]

#: Where a pipeline run that trains its detector leaves it, relative to the output.
DETECTOR_PATH = ("detector", "detector.pt")


@dataclasses.dataclass(frozen=True)
class PipelineOutput:
    """A committed pipeline output, checked.

    Attributes:
        uri: the output (the pipeline's ``--out``).
        manifest: its ``manifest.json``.
        detector_checkpoint: the checkpoint of the detector that made its masks; None when
            its masks came from the zero-shot saliency or the data set's own masks.
    """

    uri: str
    manifest: dict[str, Any]
    detector_checkpoint: str | None

    def info(self) -> dict[str, Any]:
        """For ``GET /v1/info``: the URI, run, code version, mask source and counts."""
        m = self.manifest
        return {
            "uri": self.uri,
            "run_id": m.get("run_id"),
            "code_version": m.get("code_version"),
            "mask_source": m.get("mask_source"),
            "detector": self.detector_checkpoint,
            "counts": m.get("counts"),
            "errors_by_type": m.get("errors_by_type"),
        }

    def service_config(self, cfg: ServiceConfig) -> ServiceConfig:
        """``cfg`` with the bank and the detector of this output.

        The output's detector is used unless ``cfg.mask_source`` is ``saliency``; an output
        without one (masks from saliency or the data set's own) is served with saliency.

        Raises:
            ConfigError: ``cfg`` names a bank or a detector of its own (the output gives
                both).
        """
        if cfg.bank is not None or cfg.detector_checkpoint is not None:
            raise ConfigError(
                f"the pipeline output {self.uri} gives the bank and the detector: leave bank "
                f"({cfg.bank!r}) and detector_checkpoint ({cfg.detector_checkpoint!r}) null"
            )
        detector = None if cfg.mask_source == "saliency" else self.detector_checkpoint
        return dataclasses.replace(cfg, bank=self.uri, detector_checkpoint=detector)


def _checkpoint(uri: str, manifest: dict[str, Any], s3: S3Options | None) -> str | None:
    """The output's detector: its own ``detector/detector.pt``, else the manifest's."""
    if manifest.get("mask_source") != "detector":
        return None
    own = join(uri, *DETECTOR_PATH)
    if exists(own, s3):
        return own
    named = manifest.get("detector_checkpoint")
    if isinstance(named, str) and named and exists(named, s3):
        return named
    raise ConfigError(
        f"pipeline output {uri} was made with a detector, but neither {own} nor the "
        f"manifest's detector_checkpoint {named!r} exists"
    )


def open_output(uri: str, s3: S3Options | None = None) -> PipelineOutput:
    """Check a pipeline output and find its detector (nothing is loaded yet).

    Args:
        uri: the pipeline's ``--out``: a local folder or an ``s3://`` prefix.
        s3: S3 settings; default from the environment.

    Raises:
        ConfigError: not a string; no readable ``manifest.json``; an output that is not
            complete; no ``data/*.parquet``; a detector the manifest names that is gone;
            storage that cannot be read (the cause is chained).
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError(f"output must be a local folder or an s3:// URI, got {uri!r}")
    try:
        manifest = committed_manifest(uri, s3)
        if manifest is None:
            raise ConfigError(
                f"{uri} is not a pipeline output: no manifest.json (or one that does not "
                f"parse); run `python jobs/pipeline.py --out {uri}` first"
            )
        state = manifest.get("state")
        if state != "complete":
            raise ConfigError(
                f"pipeline output {uri} is not complete (state {state!r}); wait for its run "
                "to finish, or serve another output"
            )
        data = join(uri, "data")
        files = list_files(data, suffixes=[".parquet"], s3=s3) if exists(data, s3) else []
        if not files:
            raise ConfigError(f"pipeline output {uri} has no data/*.parquet: nothing to serve")
        return PipelineOutput(uri, manifest, _checkpoint(uri, manifest, s3))
    except ConfigError:
        raise
    except (AbsRayError, OSError) as exc:
        raise ConfigError(f"cannot read pipeline output {uri}: {exc}") from exc
