import os

import pyarrow.fs as pafs
import pytest

from abs_ray.errors import ConfigError, StorageAccessError, StorageNotFoundError
from abs_ray.io import (
    S3Options,
    check_readable,
    check_writable,
    delete,
    exists,
    join,
    list_files,
    read_bytes,
    read_text,
    resolve,
    write_bytes,
    write_text,
)


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    """The same tests against a local folder and a bucket on the loopback S3 server."""
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("bucket") + "/prefix"


def test_write_read_list_exists_delete(root):
    write_bytes(join(root, "a", "x.png"), b"1")
    write_text(join(root, "a", "b", "y.JPG"), "zz")
    write_bytes(join(root, "c.txt"), b"")
    assert read_bytes(join(root, "a", "x.png")) == b"1"
    assert read_text(join(root, "a", "b", "y.JPG")) == "zz"
    everything = list_files(root)
    assert [u.removeprefix(root) for u in everything] == ["/a/b/y.JPG", "/a/x.png", "/c.txt"]
    assert list_files(root, suffixes=[".png", ".jpg"]) == [
        join(root, "a", "b", "y.JPG"),
        join(root, "a", "x.png"),
    ]
    assert list_files(root, recursive=False) == [join(root, "c.txt")]
    assert exists(join(root, "a")) and exists(join(root, "a", "x.png"))
    assert not exists(join(root, "nope"))
    delete(join(root, "a"))
    assert list_files(root) == [join(root, "c.txt")]


def test_overwrite_replaces_whole_content(root):
    uri = join(root, "f.bin")
    write_bytes(uri, b"long content" * 100)
    write_bytes(uri, b"short")
    assert read_bytes(uri) == b"short"


def test_missing_object_is_typed(root):
    with pytest.raises(StorageNotFoundError, match="nope.bin"):
        read_bytes(join(root, "nope.bin"))
    with pytest.raises(StorageNotFoundError):
        list_files(join(root, "no-such-folder"))
    with pytest.raises(StorageNotFoundError):
        check_readable(join(root, "no-such-folder"))


def test_check_writable_leaves_nothing(root):
    check_writable(root)
    assert not exists(root) or list_files(root) == []


def test_local_write_is_atomic_on_failure(tmp_path, monkeypatch):
    uri = str(tmp_path / "out.bin")
    write_bytes(uri, b"old")

    class Boom(Exception):
        pass

    real_replace = os.replace

    def failing_replace(src, dst):
        raise Boom("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(Exception, match="disk full"):
        write_bytes(uri, b"new")
    monkeypatch.setattr(os, "replace", real_replace)
    assert read_bytes(uri) == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]  # no temp file left behind


def test_s3_missing_bucket(s3_server):
    with pytest.raises(StorageNotFoundError):
        check_readable("s3://no-such-bucket-here/x", s3_server)
    with pytest.raises(StorageNotFoundError):
        check_writable("s3://no-such-bucket-here/x", s3_server)


def test_s3_wrong_credentials(s3_server_with_auth):
    bad = S3Options(endpoint_url=s3_server_with_auth, access_key="wrong", secret_key="wrong")
    with pytest.raises(StorageAccessError, match="access denied"):
        check_writable("s3://some-bucket/out", bad)
    with pytest.raises(StorageAccessError):
        list_files("s3://some-bucket/in", s3=bad)


def test_half_credentials_are_a_config_error(s3_server):
    with pytest.raises(ConfigError, match="together"):
        resolve("s3://b/x", S3Options(endpoint_url=s3_server.endpoint_url, access_key="x"))


def test_resolve_gives_what_ray_data_takes(s3_server, bucket):
    fs, path = resolve(bucket + "/a/b", s3_server)
    assert isinstance(fs, pafs.S3FileSystem) and path == bucket.removeprefix("s3://") + "/a/b"
    write_bytes(bucket + "/a/b/f", b"x", s3_server)
    with fs.open_input_stream(path + "/f") as f:
        assert f.read() == b"x"
    fs, path = resolve("relative/dir")
    assert isinstance(fs, pafs.LocalFileSystem) and os.path.isabs(path)
    assert resolve("file:///tmp/x")[1] == "/tmp/x"


def test_options_from_env_and_secrets_hidden(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSECRET")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "verysecret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    opts = S3Options.from_env()
    assert opts.endpoint_url == "http://127.0.0.1:9" and opts.region == "eu-west-1"
    assert opts.access_key == "AKIDSECRET"
    assert "SECRET" not in repr(opts) and "verysecret" not in repr(opts)
    assert opts.public() == {"endpoint_url": "http://127.0.0.1:9", "region": "eu-west-1"}
    assert S3Options.from_env(region="us-east-2").region == "us-east-2"


@pytest.mark.parametrize("uri", ["gs://bucket/x", "http://example.com/x"])
def test_unsupported_scheme(uri):
    with pytest.raises(ConfigError, match="unsupported URI scheme"):
        resolve(uri)


def test_bad_endpoint():
    with pytest.raises(ConfigError, match="endpoint"):
        resolve("s3://b/x", S3Options(endpoint_url="127.0.0.1:9000"))
