"""The labelling API over real HTTP, labels in a real (moto) S3 server."""

from __future__ import annotations

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from abs_ray.errors import LabelFormatError
from abs_ray.io import exists, read_text, write_text
from abs_ray.label.app import MAX_BODY_BYTES
from abs_ray.label.session import LabelSession
from abs_ray.models.detector import load_detector
from abs_ray.models.detector_train import csv_labels_for_manifest, evaluate_detector
from abs_ray.models.detector_train import load_labelled_images as load_images
from abs_ray.ops.label_csv import parse_patch_label_csv

GRID, SIZE = 8, 64  # as the conftest's tiny_config
G2 = GRID * GRID


def _labels_uri(bucket: str) -> str:
    return f"{bucket}/labels/{uuid.uuid4().hex[:8]}/patches.csv"


def _csv(uri: str, s3) -> dict[str, str]:
    return {r.info: r.mask_string for r in parse_patch_label_csv(read_text(uri, s3), grid=GRID)}


def _put(url: str, image_id: str, mask, **extra) -> requests.Response:
    return requests.put(f"{url}/api/labels/{image_id}", json={"mask": mask, **extra}, timeout=30)


def _random_mask(rng: random.Random) -> str:
    return "".join(rng.choice("01") for _ in range(G2))


def test_page_is_self_contained_and_state_reports_the_setup(s3_data, serve, tiny_config):
    bucket, data, manifest = s3_data
    server = serve(tiny_config(data, _labels_uri(bucket)))
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN, no fetches out
    state = requests.get(server.url + "/api/state", timeout=10).json()
    assert (state["grid"], state["target"], state["total"], state["labelled"]) == (GRID, 10, 20, 0)
    assert state["model"]["kind"] == "none" and state["training"]["state"] == "idle"


def test_load_save_next_leases_and_resume(s3_data, serve, s3_server, tiny_config):
    bucket, data, manifest = s3_data
    labels = _labels_uri(bucket)
    cfg = tiny_config(data, labels)
    server = serve(cfg)
    url = server.url
    first = requests.get(f"{url}/api/next", params={"client": "alice"}, timeout=10).json()
    assert first["reason"] == "pool_order" and first["labelled"] == 0
    image_id = first["id"]
    assert image_id in set(manifest["id"])
    item = requests.get(f"{url}/api/items/{image_id}", timeout=10).json()
    assert item == {
        "id": image_id,
        "position": 0,
        "class": int(manifest.set_index("id").loc[image_id, "label"]),
        "labelled": False,
        "mask": "0" * G2,
        "source": "empty",
        "confidence": None,
    }
    png = requests.get(f"{url}/api/image/{image_id}", timeout=10)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"

    # Alice holds the first image: Bob gets another one; then Alice saves hers.
    bob = requests.get(f"{url}/api/next", params={"client": "bob"}, timeout=10).json()
    assert bob["id"] not in (None, image_id)
    mask = "1" * 10 + "0" * (G2 - 10)
    saved = _put(url, image_id, mask, client="alice").json()
    assert saved["saved"] and (saved["labelled"], saved["records"]) == (1, 1)
    assert _csv(labels, s3_server) == {image_id: mask}
    assert read_text(labels, s3_server).splitlines()[0] == "info,mask"
    again = requests.get(f"{url}/api/items/{image_id}", timeout=10).json()
    assert (again["labelled"], again["mask"], again["source"]) == (True, mask, "label")

    # Next never hands out a labelled image or one another person holds; skip moves on.
    seen = set()
    for _ in range(5):
        nxt = requests.get(f"{url}/api/next", params={"client": "alice"}, timeout=10).json()
        assert nxt["id"] not in (image_id, bob["id"]) and nxt["id"] not in seen
        seen.add(nxt["id"])
        requests.get(f"{url}/api/next", params={"client": "alice", "skip": nxt["id"]}, timeout=10)

    # A new server on the same labels file resumes: the label is there, the count too.
    resumed = serve(cfg)
    state = requests.get(f"{resumed.url}/api/state", timeout=10).json()
    assert state["labelled"] == 1
    item = requests.get(f"{resumed.url}/api/items/{image_id}", timeout=10).json()
    assert (item["labelled"], item["mask"]) == (True, mask)


def test_concurrent_saves_all_land(s3_data, serve, s3_server, tiny_config):
    bucket, data, manifest = s3_data
    labels = _labels_uri(bucket)
    server = serve(tiny_config(data, labels))
    ids = list(manifest["id"])[:16]
    rng = random.Random(0)
    masks = {i: _random_mask(rng) for i in ids}
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda i: _put(server.url, i, masks[i]), ids))
    assert [r.status_code for r in responses] == [200] * len(ids)
    assert _csv(labels, s3_server) == masks  # every save landed, none overwrote another
    # Many people saving one image at once: one record, equal to one of the saves.
    target = ids[0]
    variants = [_random_mask(rng) for _ in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = [r.status_code for r in pool.map(lambda m: _put(server.url, target, m), variants)]
    assert codes == [200] * 8
    final = _csv(labels, s3_server)
    assert final[target] in variants and len(final) == len(ids)
    assert {k: v for k, v in final.items() if k != target} == {
        k: v for k, v in masks.items() if k != target
    }
    state = requests.get(f"{server.url}/api/state", timeout=10).json()
    assert state["labelled"] == len(ids)


@pytest.mark.parametrize(
    ("path", "body", "status", "detail"),
    [
        ("ID", {"mask": "01" * 10}, 422, f"mask must have {G2} characters (grid 8x8), got 20"),
        ("ID", {"mask": "0" * (G2 - 1) + "2"}, 422, "only '0' and '1', got '2' at position 63"),
        ("ID", {"mask": "0" * (G2 - 1) + " "}, 422, "only '0' and '1'"),
        ("ID", {"mask": 1}, 422, "mask"),
        ("ID", {"colour": "red"}, 422, "mask"),
        ("ID", {"mask": "0" * G2, "extra": 1}, 422, "extra"),
        ("ID", ["0" * G2], 422, "JSON object"),
        ("images/nope.png", {"mask": "0" * G2}, 404, "unknown image id 'images/nope.png'"),
    ],
)
def test_bad_label_payloads_are_refused(
    s3_data, serve, s3_server, path, body, status, detail, tiny_config
):
    bucket, data, manifest = s3_data
    labels = _labels_uri(bucket)
    server = serve(tiny_config(data, labels))
    image_id = manifest["id"].iloc[0] if path == "ID" else path
    r = requests.put(f"{server.url}/api/labels/{image_id}", json=body, timeout=10)
    assert r.status_code == status, r.text
    assert detail in r.json()["detail"] and r.json()["status"] == status
    assert not exists(labels, s3_server)  # nothing was written


def test_bad_requests_other_than_masks(s3_data, serve, tiny_config):
    bucket, data, manifest = s3_data
    server = serve(tiny_config(data, _labels_uri(bucket)))
    url, image_id = server.url, manifest["id"].iloc[0]
    r = requests.put(f"{url}/api/labels/{image_id}", data="mask=0101", timeout=10)
    assert r.status_code == 415 and "JSON" in r.json()["detail"]
    r = requests.put(
        f"{url}/api/labels/{image_id}",
        data="{not json",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 415 and "not valid JSON" in r.json()["detail"]
    big = {"mask": "0" * (MAX_BODY_BYTES + 1)}
    r = requests.put(f"{url}/api/labels/{image_id}", json=big, timeout=10)
    assert r.status_code == 413
    for params, status in [
        ({}, 422),
        ({"client": "a b"}, 422),
        ({"client": "x" * 65}, 422),
        ({"client": "ok", "skip": "images/nope.png"}, 404),
    ]:
        r = requests.get(f"{url}/api/next", params=params, timeout=10)
        assert r.status_code == status, (params, r.text)
        assert r.json()["status"] == status
    for route in ("items", "image"):
        r = requests.get(f"{url}/api/{route}/images/nope.png", timeout=10)
        assert r.status_code == 404 and "unknown image id" in r.json()["detail"]
    r = requests.post(f"{url}/api/train", timeout=10)
    assert r.status_code == 409 and "need at least 5 labelled images" in r.json()["detail"]


def test_published_csv_is_resumed_and_its_other_records_kept(
    s3_data, serve, s3_server, tiny_config
):
    """An existing CSV keyed by file names (as the authors publish) is matched and preserved."""
    bucket, data, manifest = s3_data
    labels = _labels_uri(bucket)
    first, second = manifest["id"].iloc[0], manifest["id"].iloc[1]
    by_name = first.rsplit("/", 1)[-1]
    write_text(
        labels,
        f"info,mask\nelsewhere/other.jpg,{'1' * G2}\n{by_name},{'0' * G2}\n",
        s3_server,
    )
    server = serve(tiny_config(data, labels))
    assert requests.get(f"{server.url}/api/state", timeout=10).json()["labelled"] == 1
    item = requests.get(f"{server.url}/api/items/{first}", timeout=10).json()
    assert item["labelled"] and item["mask"] == "0" * G2
    new = "01" * (G2 // 2)
    assert _put(server.url, first, new).status_code == 200
    assert _put(server.url, second, new).status_code == 200
    assert list(_csv(labels, s3_server).items()) == [
        ("elsewhere/other.jpg", "1" * G2),  # kept, in place
        (by_name, new),  # updated under its own key
        (second, new),  # appended, keyed by manifest id
    ]
    # A labels file with another grid size is refused at start, naming the file.
    write_text(labels, "info,mask\na.png,0101\n", s3_server)
    with pytest.raises(LabelFormatError, match=r"patches.csv: line 2: mask must have 64"):
        LabelSession(tiny_config(data, labels), s3_server)


def test_retrain_reports_heldout_accuracy_and_drives_selection(
    s3_data, serve, s3_server, tiny_config, true_masks
):
    bucket, data, manifest = s3_data
    labels = _labels_uri(bucket)
    cfg = tiny_config(data, labels)
    server = serve(cfg)
    url = server.url
    truth = true_masks
    labelled = list(manifest["id"])[:10]
    for image_id in labelled:
        assert _put(url, image_id, truth[image_id]).status_code == 200

    started = requests.post(f"{url}/api/train", timeout=10)
    assert started.status_code == 202 and started.json()["state"] == "running"
    busy = requests.post(f"{url}/api/train", timeout=10)
    assert busy.status_code == 409 and busy.json()["error"] == "training_busy"
    deadline = time.monotonic() + 300
    while (status := requests.get(f"{url}/api/train", timeout=10).json())["state"] == "running":
        assert time.monotonic() < deadline, "retraining did not finish in 300 s"
        time.sleep(0.5)
    assert status["state"] == "done", status
    assert status["round"] == 1 and status["num_labels"] == 10
    assert status["num_train"] + status["num_heldout"] == 10 and status["num_heldout"] >= 1
    acc = status["heldout_balanced_patch_accuracy"]
    assert 0.0 <= acc <= 1.0

    # The reported accuracy is the new checkpoint's on held-out labels it never trained on.
    round_uri = status["uri"]
    held = csv_labels_for_manifest(
        read_text(f"{round_uri}/heldout_labels.csv", s3_server), manifest
    )
    trained = {
        r.info for r in parse_patch_label_csv(read_text(f"{round_uri}/train_labels.csv", s3_server))
    }
    assert held and set(held).isdisjoint(trained) and set(held) | trained == set(labelled)
    det = load_detector(f"{round_uri}/detector.pt", s3=s3_server)
    rows = manifest[manifest["id"].isin(held)]
    again = evaluate_detector(det, load_images(rows, SIZE, GRID, labels=held, s3=s3_server))
    assert again["balanced_patch_accuracy"] == pytest.approx(acc)
    assert exists(f"{cfg.detector_out}/latest.json", s3_server)

    # The new detector pre-fills and picks the least confident unlabelled image next.
    assert server.session.wait_idle(timeout=120)
    state = requests.get(f"{url}/api/state", timeout=10).json()
    assert state["model"]["kind"] == "detector" and state["model"]["checkpoint"].endswith(
        "round-0001/detector.pt"
    )
    assert state["scored"] == state["to_score"] == 10
    pick = requests.get(f"{url}/api/next", params={"client": "carol"}, timeout=10).json()
    assert pick["reason"] == "least_confident" and pick["id"] not in labelled
    confidences = {}
    for image_id in set(manifest["id"]) - set(labelled):
        item = requests.get(f"{url}/api/items/{image_id}", timeout=10).json()
        assert item["source"] == "detector" and len(item["mask"]) == G2
        confidences[image_id] = item["confidence"]
    assert pick["confidence"] == pytest.approx(min(confidences.values()))
    assert confidences[pick["id"]] == pytest.approx(min(confidences.values()))

    # A restarted server (no --detector) resumes with the latest retrained detector.
    resumed = serve(cfg)
    model = requests.get(f"{resumed.url}/api/state", timeout=10).json()["model"]
    assert model["kind"] == "detector" and model["source"].endswith("latest.json")


def test_saliency_prior_prefills_the_object(s3_data, serve, s3_server, tiny_config, true_masks):
    """Without a detector the zero-shot prior pre-fills: its patches cover the object more."""
    bucket, data, manifest = s3_data
    server = serve(tiny_config(data, _labels_uri(bucket), prior="saliency"))
    truth = true_masks
    inside = outside = 0.0
    n_in = n_out = 0
    for image_id in list(manifest["id"])[:8]:
        item = requests.get(f"{server.url}/api/items/{image_id}", timeout=30).json()
        assert item["source"] == "prior" and item["confidence"] is None
        for pred, true in zip(item["mask"], truth[image_id], strict=True):
            if pred == "1":
                inside, n_in = inside + (true == "1"), n_in + 1
            else:
                outside, n_out = outside + (true == "1"), n_out + 1
    assert n_in > 0
    assert inside / n_in > 2 * (outside / max(n_out, 1))  # foreground far likelier in pre-fill
    nxt = requests.get(f"{server.url}/api/next", params={"client": "d"}, timeout=10).json()
    assert nxt["reason"] == "pool_order"  # the prior does not drive selection


def test_unreadable_image_is_reported_and_never_handed_out(tmp_path, serve, tiny_config):
    from abs_ray.data import SyntheticConfig, write_synthetic
    from abs_ray.errors import ConfigError
    from abs_ray.models.detector import create_detector, save_detector

    data = str(tmp_path / "data")
    manifest = write_synthetic(data, SyntheticConfig(n_train=4, n_val=0, n_test=0, size=SIZE))
    bad = manifest["id"].iloc[0]
    (tmp_path / "data" / bad).write_bytes(b"not an image at all")
    server = serve(tiny_config(data, str(tmp_path / "labels.csv")))
    r = requests.get(f"{server.url}/api/image/{bad}", timeout=10)
    assert r.status_code == 415 and r.json()["error"] == "not_an_image"
    assert requests.get(f"{server.url}/api/state", timeout=10).json()["unreadable"] == 1
    handed = set()
    for _ in range(4):
        nxt = requests.get(f"{server.url}/api/next", params={"client": "e"}, timeout=10).json()
        if nxt["id"] is None:
            assert nxt["reason"] == "done"
            break
        handed.add(nxt["id"])
        requests.get(
            f"{server.url}/api/next", params={"client": "e", "skip": nxt["id"]}, timeout=10
        )
    assert handed == set(manifest["id"]) - {bad}

    # A detector whose grid differs from the labels' is refused at start.
    det_uri = str(tmp_path / "g4.pt")
    save_detector(create_detector("test_tiny", grid=4, image_size=SIZE, weights=None), det_uri)
    with pytest.raises(ConfigError, match="has grid 4x4, the labels use 8x8"):
        LabelSession(tiny_config(data, str(tmp_path / "labels.csv"), detector_checkpoint=det_uri))
