"""Background-reliance audit of any classifier on a disentangled data set (issue 18).

- :mod:`abs_ray.audit.variants`: the backgrounds-challenge variants (pure batched torch);
- :mod:`abs_ray.audit.metrics`: accuracy per variant, split and class, ``bg_gap`` with a
  paired bootstrap confidence interval;
- :mod:`abs_ray.audit.models`: a classifier from a training run folder, an MLflow model URI,
  a TorchScript or ``torch.export`` file;
- :mod:`abs_ray.audit.run`: the job (Ray Data batch inference), ``audit.json`` and the report.
"""

from abs_ray.audit.config import AuditConfig
from abs_ray.audit.variants import (
    MIXED_VARIANTS,
    VARIANTS,
    PartnerParams,
    apply_variants,
    composite_variants,
    sample_partners,
)

__all__ = [
    "MIXED_VARIANTS",
    "AuditConfig",
    "VARIANTS",
    "PartnerParams",
    "apply_variants",
    "composite_variants",
    "sample_partners",
]


def run_audit(*args, **kwargs):
    """:func:`abs_ray.audit.run.run_audit` (imported on use: it brings pyarrow and MLflow)."""
    from abs_ray.audit.run import run_audit as _run

    return _run(*args, **kwargs)


__all__ += ["run_audit"]
