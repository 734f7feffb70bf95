"""The main job end to end on a real local Ray cluster: local folder, S3, resume.

`ray job submit` of the README's command line: tests/pipeline/test_jobs.py."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from abs_ray.data import SyntheticConfig, load_dataset, write_synthetic
from abs_ray.errors import ConfigError, LayoutError, StorageAccessError, StorageNotFoundError
from abs_ray.io import (
    S3Options,
    decode_image,
    delete,
    join,
    list_files,
    read_bytes,
    read_text,
    write_bytes,
)
from abs_ray.models.detector_train import DetectorTrainConfig
from abs_ray.pipeline import PipelineConfig, PoolConfig, read_disentangled, run
from abs_ray.stages.sink import read_ids

REPO = Path(__file__).resolve().parents[1]
SMALL = SyntheticConfig(n_train=16, n_val=4, n_test=8, size=32, seed=1)
N = SMALL.n_train + SMALL.n_val + SMALL.n_test
TINY_TRAIN = DetectorTrainConfig(
    backbone="test_tiny",
    weights=None,
    image_size=32,
    grid=8,
    epochs=3,
    num_labelled=12,
    eval_max=8,
    sheet_samples=4,
    num_workers=2,
    device="cpu",
    min_balanced_accuracy=0.0,  # a 3-epoch plumbing detector; the floor is tested in tests/models
)


def _cfg(data, out, **kw):
    # Small load batches: several blocks, so several output shards (resume has something to lose).
    # The train stage is exercised on its own in test_truth_masks_oracle.
    kw.setdefault("stages", ("detector", "disentangle"))
    return PipelineConfig(
        data=data,
        out=out,
        detector=TINY_TRAIN,
        inpainter="telea",
        preview_samples=4,
        load=PoolConfig(batch_size=8, num_cpus=0.25),
        rows_per_file=6,
        **kw,
    )


def _damage(data_uri, s3=None):
    """Make three inputs bad: junk bytes, a truncated PNG, an empty file. Returns id → error."""
    manifest = load_dataset(data_uri, s3).set_index("id")
    test_ids = manifest.index[manifest["split"] == "test"][:3]  # keep the labelled train images
    junk, short, empty = (manifest.loc[i, "image_uri"] for i in test_ids)
    write_bytes(junk, b"this is not an image", s3)
    png = read_bytes(short, s3)
    write_bytes(short, png[: len(png) // 2], s3)
    write_bytes(empty, b"", s3)
    return dict(
        zip(test_ids, ["NotAnImageError", "TruncatedImageError", "EmptyImageError"], strict=True)
    )


def _check_outputs(out, damaged, s3=None):
    import ray

    summary = json.loads(read_text(join(out, "manifest.json"), s3))
    assert summary["counts"] == {"input": N, "ok": N - len(damaged), "errors": len(damaged)}
    errors = read_disentangled_errors(out, s3)
    assert dict(zip(errors["id"], errors["error_type"], strict=True)) == damaged
    assert set(errors["stage"]) == {"load"} and all(errors["message"].str.len() > 0)
    rows = read_disentangled(out, s3)
    assert (
        len(rows) == N - len(damaged)
        and rows["id"].is_unique
        and not set(rows["id"]) & set(damaged)
    )
    # Readable by Ray Data, with the columns the training job reads.
    fs, path = __import__("abs_ray.io", fromlist=["resolve"]).resolve(join(out, "data"), s3)
    ds = ray.data.read_parquet(path, filesystem=fs)
    assert ds.count() == N - len(damaged)
    assert {
        "id",
        "image_uri",
        "label",
        "split",
        "group",
        "foreground_png",
        "background_png",
        "patch_prob",
        "detector",
        "code_version",
    } <= set(ds.schema().names)
    fg = decode_image(rows["foreground_png"].iloc[0], alpha=True)
    bg = decode_image(rows["background_png"].iloc[0])
    assert fg.shape == (32, 32, 4) and bg.shape == (32, 32, 3)
    assert len(rows["patch_prob"].iloc[0]) == 8 * 8
    # foreground_fraction is the share of the tight alpha, and the summary reports it.
    alphas = [decode_image(b, alpha=True)[..., 3] for b in rows["foreground_png"]]
    np.testing.assert_allclose(
        rows["foreground_fraction"], [float((a > 0).mean()) for a in alphas], atol=1e-6
    )
    assert summary["masks"]["rows"] == len(rows)
    assert summary["masks"]["empty_share"] == pytest.approx(
        float((rows["foreground_fraction"] == 0).mean()), abs=1e-4
    )
    assert summary["detector_checkpoint"] == join(out, "detector", "detector.pt")
    assert decode_image(read_bytes(join(out, "swap_preview.png"), s3)).shape[0] == 3 * 32
    return summary


def _snapshot(folder):
    """Every file under a local folder → its bytes (what "byte-identical" compares)."""
    root = Path(folder)
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def read_disentangled_errors(out, s3=None):
    import io

    import pandas as pd
    import pyarrow.parquet as pq

    files = list_files(join(out, "errors"), suffixes=[".parquet"], s3=s3)
    return pd.concat(
        [pq.read_table(io.BytesIO(read_bytes(f, s3))).to_pandas() for f in files], ignore_index=True
    )


def test_local_end_to_end_rerun_and_resume(ray_cluster, tmp_path):
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    write_synthetic(data, SMALL)
    damaged = _damage(data)
    run(_cfg(data, out))
    summary = _check_outputs(out, damaged)
    assert summary["images_per_s"]["disentangle"] > 0 and set(summary["seconds"]) >= {
        "detector",
        "load",
        "detect",
        "inpaint",
        "encode",
    }
    metrics = json.loads(read_text(join(out, "detector", "metrics.json")))
    assert 0.0 <= metrics["held_out"]["balanced_patch_accuracy"] <= 1.0

    # A plain re-run replaces the outputs: still one row per id.
    run(_cfg(data, out))
    _check_outputs(out, damaged)

    # Interrupt: lose some written shards (as if the run died before writing them) → resume.
    shards = list_files(join(out, "data"), suffixes=[".parquet"])
    assert len(shards) >= 2
    for uri in shards[: len(shards) // 2]:
        delete(uri)
    assert len(read_ids(join(out, "data"))) < N - len(damaged)
    resumed = run(_cfg(data, out, resume=True))
    assert 0 < resumed["processed_this_run"]["rows"] < N
    _check_outputs(out, damaged)
    # Resuming a finished run does nothing and changes nothing.
    before = _snapshot(out)
    run(_cfg(data, out, resume=True))
    assert _snapshot(out) == before
    _check_outputs(out, damaged)


def test_s3_end_to_end(ray_cluster, bucket, s3_server):
    data, out = f"{bucket}/data", f"{bucket}/runs/r1"
    write_synthetic(data, SMALL, s3_server)
    damaged = _damage(data, s3_server)
    summary = run(_cfg(data, out), s3=s3_server)
    _check_outputs(out, damaged, s3_server)
    text = json.dumps(summary)
    assert s3_server.secret_key not in text and "testing" not in text


def test_stage_classes_agree_with_the_single_image_path(tmp_path):
    from abs_ray.models import create_detector, create_inpainter, disentangle, save_detector
    from abs_ray.stages.disentangle import DetectPatches, InpaintBackgrounds

    torch.manual_seed(0)
    model = create_detector("test_tiny", grid=8, image_size=32, weights=None).eval()
    ckpt = str(tmp_path / "d.pt")
    save_detector(model, ckpt)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    batch = {
        "image_uri": np.array(["a", "b", "c"]),
        "image": images,
        "error_stage": np.array([""] * 3, object),
        "error_type": np.array([""] * 3, object),
        "error_message": np.array([""] * 3, object),
    }
    out = InpaintBackgrounds("telea", tight=0.5, loose=0.9, device="cpu")(
        DetectPatches(ckpt, device="cpu")(batch)
    )
    ref = disentangle(
        torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255,
        model,
        create_inpainter("telea"),
        0.5,
        0.9,
    )
    np.testing.assert_allclose(out["prob"], ref.prob.numpy(), atol=1e-6)
    np.testing.assert_array_equal(out["alpha"], (ref.alpha[:, 0] * 255).round().byte().numpy())
    expected_bg = (ref.background * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(out["background"], expected_bg)


def test_encoding_in_the_inpaint_actor_matches_encode_outputs():
    from abs_ray.stages.disentangle import InpaintBackgrounds, encode_outputs

    rng = np.random.default_rng(1)
    batch = {
        "image_uri": np.array(["a", "b"]),
        "image": rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8),
        "prob": rng.random((2, 4, 4)).astype(np.float32),
        "error_stage": np.array(["", ""], object),
        "error_type": np.array(["", ""], object),
        "error_message": np.array(["", ""], object),
    }
    fused = InpaintBackgrounds("telea", device="cpu", encode=True)(dict(batch))
    ref = encode_outputs(InpaintBackgrounds("telea", device="cpu")(dict(batch)))
    assert "background" not in fused and "image" not in fused
    for key in ("foreground_png", "background_png"):
        assert list(fused[key]) == list(ref[key]) and fused[key][0][:4] == b"\x89PNG"
    np.testing.assert_array_equal(fused["patch_prob"], ref["patch_prob"])


def test_true_mask_coverage_matches_patch_coverage():
    from abs_ray.ops import patch_coverage
    from abs_ray.stages.disentangle import masks_from_truth

    masks = (np.random.default_rng(2).random((3, 32, 32)) > 0.6).astype(np.uint8) * 255
    batch = {
        "image_uri": np.array(["a", "b", "c"]),
        "mask_uri": np.array(["m", None, "m"], object),
        "mask": masks,
        "error_stage": np.array([""] * 3, object),
        "error_type": np.array([""] * 3, object),
        "error_message": np.array([""] * 3, object),
    }
    out = masks_from_truth(batch, grid=8)
    ref = 1 - patch_coverage(torch.from_numpy(masks).float() / 255, 8).numpy()
    np.testing.assert_allclose(out["prob"][[0, 2]], ref[[0, 2]], atol=1e-6)
    # The row without a true mask fails on its own.
    assert list(out["error_type"]) == ["", "DatasetError", ""]


def test_a_failing_row_does_not_fail_its_batch(tmp_path):
    from abs_ray.stages.disentangle import InpaintBackgrounds

    batch = {
        "image_uri": np.array(["a", "b"]),
        "image": np.zeros((2, 16, 16, 3), np.uint8),
        "prob": np.stack([np.zeros((4, 4), np.float32), np.full((4, 4), np.nan, np.float32)]),
        "error_stage": np.array(["", ""], object),
        "error_type": np.array(["", ""], object),
        "error_message": np.array(["", ""], object),
    }
    stage = InpaintBackgrounds("gray", inpainter_kwargs={"all_hole": "raise"}, device="cpu")
    out = stage(batch)
    # Row a: P(background)=0 everywhere → the whole image is hole → AllHoleError for that row only.
    assert out["error_type"][0] == "AllHoleError" and out["error_stage"][0] == "inpaint"
    assert out["error_type"][1] == ""


def test_missing_bucket_fails_before_work(s3_server, tmp_path):
    data = str(tmp_path / "data")
    write_synthetic(data, SMALL)
    with pytest.raises(StorageNotFoundError):
        run(_cfg(data, "s3://no-such-bucket-xyz/out"), s3=s3_server)
    with pytest.raises(StorageNotFoundError):
        run(_cfg("s3://no-such-bucket-xyz/in", str(tmp_path / "o")), s3=s3_server)
    assert not (tmp_path / "o").exists()


def test_wrong_credentials_fail_before_work(s3_server_with_auth, tmp_path):
    bad = S3Options(endpoint_url=s3_server_with_auth, access_key="wrong", secret_key="wrong")
    with pytest.raises(StorageAccessError):
        run(_cfg("s3://some-bucket/in", str(tmp_path / "o")), s3=bad)
    assert not (tmp_path / "o").exists()


def test_unknown_layout_fails_before_work(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("no images here")
    with pytest.raises(LayoutError):
        run(_cfg(str(tmp_path / "data"), str(tmp_path / "o")))
    assert not (tmp_path / "o" / "detector").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"grid": 15}, "patch grid 15 must divide image size 32"),
        ({"stages": ("detector", "paint")}, "unknown stage"),
        ({"stages": ("disentangle",)}, "needs a detector"),
        ({"tight": 1.5}, "tight"),
        # Registry names and arguments are checked when the config is made, not in an actor.
        ({"inpainter": "patchmach"}, "unknown inpainter 'patchmach'; known: gray"),
        (
            {"inpainter": "telea", "inpainter_kwargs": {"radiuss": 2}},
            r"does not accept \['radiuss'\]",
        ),
        ({"mask_source": "saliency", "detector_checkpoint": "d.pt"}, "uses no detector"),
        ({"mask_source": "magic"}, "mask_source must be one of detector, truth, saliency"),
        ({"image_size": 100}, "patch grid 16 must divide image size 100"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_bad_config_is_typed(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        if "grid" in kwargs:
            PipelineConfig(detector=dataclasses.replace(TINY_TRAIN, **kwargs))
        else:
            PipelineConfig(**kwargs)


def test_truth_masks_oracle(ray_cluster, tmp_path):
    """mask_source='truth': alpha is the data set's mask exactly; no detector is trained."""
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    manifest = write_synthetic(data, SMALL)
    summary = run(_cfg(data, out, stages=("disentangle",), mask_source="truth"))
    assert (
        summary["counts"] == {"input": N, "ok": N, "errors": 0}
        and summary["detector_checkpoint"] is None
    )
    rows = read_disentangled(out).set_index("id")
    for row_id in manifest["id"][:5]:
        alpha = decode_image(rows.loc[row_id, "foreground_png"], alpha=True)[..., 3]
        truth = decode_image(read_bytes(manifest.set_index("id").loc[row_id, "mask_uri"]))[..., 0]
        np.testing.assert_array_equal(alpha > 127, truth > 127)
    assert set(rows["detector"]) == {"truth"}

    # The train stage reads this output (oracle: true-mask swaps) and reports test accuracies.
    from abs_ray.train import TrainConfig

    train = TrainConfig(
        data="-",
        method="oracle",
        backbone="test_tiny",
        weights=None,
        epochs=1,
        batch_size=8,
        num_workers=2,
        cpus_per_worker=0.5,
    )
    summary = run(_cfg(data, out, stages=("train",), train=train))
    report = json.loads(read_text(summary["train"]["report"]))
    assert summary["train"]["method"] == "oracle" and report["best"]["epoch"] == 0
    assert 0.0 <= report["best"]["test"]["worst_group_accuracy"] <= 1.0
