"""Data set files are read inside their root, regular files only, and listed without
following links out of the root."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from abs_ray.data import load_dataset, read_class_folders
from abs_ray.data.files import data_root, is_inside, list_image_files, read_data_file
from abs_ray.errors import (
    ImageTooLargeError,
    NotAFileError,
    OutsideDataRootError,
    StorageError,
    StorageNotFoundError,
)
from abs_ray.io import write_bytes
from tests.hostile import SECRET, corpus, write_entry, write_outside

ENTRIES = {e.name: e for e in corpus()}


@pytest.fixture
def tree(tmp_path):
    """``root/cls/`` with one real image and every local-only corpus entry; ``outside/``."""
    root, outside = tmp_path / "root", write_outside(tmp_path / "outside")
    (root / "cls").mkdir(parents=True)
    (root / "cls" / "good.png").write_bytes(ENTRIES["rgb.png"].data)
    for entry in corpus():
        if entry.local_only:
            write_entry(entry, root / "cls" / entry.name, outside)
    return str(root), outside


@pytest.mark.parametrize(
    "name, error",
    [
        ("escape_secret.png", OutsideDataRootError),
        ("escape_image.png", OutsideDataRootError),  # a valid image, still outside
        ("directory.png", NotAFileError),
        ("broken_link.png", StorageNotFoundError),
        ("loop_link.png", StorageError),
    ],
)
def test_refused_entries_are_typed_and_quote_nothing(tree, name, error):
    root, _ = tree
    with pytest.raises(error) as info:
        read_data_file(os.path.join(root, "cls", name), root)
    message = str(info.value)
    assert name in message and SECRET.decode() not in message
    assert "outside/" not in message  # where an escaping link points is not told


def test_a_link_out_of_a_folder_is_refused_for_the_files_below_it(tree):
    root, _ = tree
    with pytest.raises(OutsideDataRootError):
        read_data_file(os.path.join(root, "cls", "escape_dir.png", "inner.png"), root)


def test_a_pipe_is_refused_without_blocking(tree):
    root, _ = tree
    result: list[BaseException] = []

    def read():
        try:
            read_data_file(os.path.join(root, "cls", "pipe.png"), root)
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            result.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert not reader.is_alive(), "reading a named pipe blocked"
    assert isinstance(result[0], NotAFileError) and "named pipe" in str(result[0])


def test_a_file_over_the_byte_limit_is_refused_unread(tree):
    root, _ = tree
    path = os.path.join(root, "cls", "sparse.png")
    with pytest.raises(ImageTooLargeError, match="over the limit of 1000 bytes"):
        read_data_file(path, root, max_bytes=1000)
    assert read_data_file(os.path.join(root, "cls", "good.png"), root, max_bytes=10**6)


def test_links_inside_the_root_and_files_named_explicitly_elsewhere_are_read(tree, tmp_path):
    root, outside = tree
    good = ENTRIES["rgb.png"].data
    assert read_data_file(os.path.join(root, "cls", "good.png"), root) == good
    inside = read_data_file(os.path.join(root, "cls", "inside_link.png"), root)
    assert inside[:8] == b"\x89PNG\r\n\x1a\n"
    # A path that is not under the root was named on purpose (a manifest's absolute path).
    assert read_data_file(os.path.join(outside, "image.png"), root)[:4] == b"\x89PNG"
    # No root: no containment check (what callers outside a data set get).
    assert read_data_file(os.path.join(root, "cls", "escape_image.png"))[:4] == b"\x89PNG"
    # The root itself may be reached through a link.
    alias = tmp_path / "alias"
    os.symlink(root, alias)
    assert read_data_file(str(alias / "cls" / "good.png"), str(alias)) == good
    assert read_data_file(str(alias / "cls" / "inside_link.png"), str(alias))[:4] == b"\x89PNG"
    with pytest.raises(OutsideDataRootError):
        read_data_file(str(alias / "cls" / "escape_image.png"), str(alias))


def test_remote_reads_stop_at_the_byte_limit(bucket, s3_server):
    uri = f"{bucket}/cls/big.png"
    write_bytes(uri, b"\0" * 5000, s3_server)
    assert len(read_data_file(uri, None, s3_server, max_bytes=5000)) == 5000
    with pytest.raises(ImageTooLargeError, match="over the limit of 4999 bytes"):
        read_data_file(uri, None, s3_server, max_bytes=4999)
    with pytest.raises(StorageNotFoundError):
        read_data_file(f"{bucket}/cls/none.png", None, s3_server)


def test_listing_shows_everything_named_like_an_image_and_follows_no_folder_link(tree, caplog):
    root, outside = tree
    os.symlink(os.path.join(root, "cls"), os.path.join(root, "cls", "again"))  # a loop
    os.symlink(outside, os.path.join(root, "elsewhere"))  # a folder outside
    os.makedirs(os.path.join(root, "cls2"))
    os.symlink(os.path.join(root, "cls"), os.path.join(root, "cls2", "alias"))  # inside
    with caplog.at_level(logging.WARNING, logger="abs_ray.data.files"):
        found = list_image_files(root, (".png",))
    rel = [os.path.relpath(f, root) for f in found]
    # Every local-only entry (directories, pipes, links) is listed once, under its own name;
    # nothing below the directory named directory.png, nothing hidden, nothing through a
    # linked folder (inside: listed under its real path; outside: left out, with a warning).
    expected = {"cls/good.png"} | {f"cls/{e.name}" for e in corpus() if e.local_only}
    assert rel == sorted(expected)
    assert "elsewhere: a link to a folder outside the data root" in caplog.text
    assert "alias" not in caplog.text and "again" not in caplog.text


def test_class_folders_take_a_directory_named_like_an_image_as_a_row(tree):
    root, _ = tree
    df = read_class_folders(root)
    assert "cls/directory.png" in set(df["id"])  # a row, refused when read
    assert "cls/escape_secret.png" in set(df["id"])
    assert len(load_dataset(root)) == len(df)


def test_data_root_of_each_layout(tmp_path):
    (tmp_path / "wb").mkdir()
    (tmp_path / "wb" / "metadata.csv").write_text("x")
    assert data_root(str(tmp_path / "wb")) == str(tmp_path / "wb")
    assert data_root(str(tmp_path / "wb" / "metadata.csv")) == str(tmp_path / "wb")
    assert data_root(str(tmp_path / "m" / "manifest.parquet")) == str(tmp_path / "m")
    assert data_root("file://" + str(tmp_path / "wb") + "/") == str(tmp_path / "wb")
    assert data_root("s3://bucket/wb") is None
    assert is_inside("/a/b/c", "/a/b") and not is_inside("/a/bc", "/a/b")
