"""One way to name data everywhere: a local path or ``s3://bucket/prefix``.

A URI resolves to a :mod:`pyarrow.fs` file system and a path inside it. That pair is what Ray
Data takes (``filesystem=``), and every small read/write/list here goes through the same pair,
so local folders, AWS S3 and any S3-compatible endpoint (MinIO, Ceph, moto) behave alike.

S3 settings come from :class:`S3Options`: explicit values first, then the standard AWS
environment (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``),
then the default AWS credential chain. The endpoint is passed to pyarrow explicitly because
pyarrow does not read ``AWS_ENDPOINT_URL`` itself.

Example:
    >>> import tempfile, os
    >>> root = tempfile.mkdtemp()
    >>> write_bytes(join(root, "a", "b.txt"), b"hi")
    >>> read_bytes(join(root, "a", "b.txt"))
    b'hi'
    >>> [os.path.basename(u) for u in list_files(root)]
    ['b.txt']
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import posixpath
import re
import tempfile
import uuid
from collections.abc import Iterable
from urllib.parse import urlparse

import pyarrow.fs as pafs

from abs_ray.errors import ConfigError, StorageAccessError, StorageError, StorageNotFoundError

logger = logging.getLogger(__name__)

__all__ = [
    "S3Options",
    "delete",
    "check_writable",
    "check_readable",
    "exists",
    "is_remote",
    "join",
    "list_files",
    "read_bytes",
    "read_text",
    "resolve",
    "write_bytes",
    "write_text",
]

_SCHEMES = ("s3",)
_UMASK = os.umask(0)
os.umask(_UMASK)


@dataclasses.dataclass(frozen=True)
class S3Options:
    """Connection settings for S3 or any S3-compatible endpoint.

    Attributes:
        endpoint_url: ``http(s)://host:port`` of an S3-compatible server; None for AWS.
        access_key: access key id; None to use the default credential chain.
        secret_key: secret access key.
        session_token: optional session token.
        region: region name (S3-compatible servers usually accept ``us-east-1``).

    Secrets are excluded from ``repr`` so they never reach logs or manifests.
    """

    endpoint_url: str | None = None
    access_key: str | None = dataclasses.field(default=None, repr=False)
    secret_key: str | None = dataclasses.field(default=None, repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)
    region: str | None = None

    @classmethod
    def from_env(cls, **overrides: str | None) -> S3Options:
        """Read the standard AWS environment; non-None ``overrides`` win."""
        env = os.environ
        values = {
            "endpoint_url": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
            "access_key": env.get("AWS_ACCESS_KEY_ID"),
            "secret_key": env.get("AWS_SECRET_ACCESS_KEY"),
            "session_token": env.get("AWS_SESSION_TOKEN"),
            "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def public(self) -> dict[str, str | None]:
        """Settings safe to print or store (no keys or tokens)."""
        return {"endpoint_url": self.endpoint_url, "region": self.region}

    def filesystem(self) -> pafs.S3FileSystem:
        """A pyarrow S3 file system for these settings (cached per settings)."""
        return _s3_filesystem(self)

    def boto3_client(self):
        """A boto3 S3 client for these settings (for the few calls pyarrow lacks)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            aws_session_token=self.session_token,
            region_name=self.region or "us-east-1",
        )


@functools.lru_cache(maxsize=16)
def _s3_filesystem(opts: S3Options) -> pafs.S3FileSystem:
    kwargs: dict = {"region": opts.region or "us-east-1"}
    if opts.endpoint_url:
        parsed = urlparse(opts.endpoint_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(
                f"S3 endpoint must look like http(s)://host[:port], got {opts.endpoint_url!r}"
            )
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme
    if opts.access_key or opts.secret_key:
        if not (opts.access_key and opts.secret_key):
            raise ConfigError("S3 access key and secret key must be given together")
        kwargs.update(access_key=opts.access_key, secret_key=opts.secret_key)
        if opts.session_token:
            kwargs["session_token"] = opts.session_token
    return pafs.S3FileSystem(**kwargs)


def is_remote(uri: str) -> bool:
    """True for ``s3://`` URIs, False for local paths (including ``file://``)."""
    return urlparse(str(uri)).scheme in _SCHEMES


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI with ``/`` (or the OS separator for local paths).

    >>> join("s3://bucket/runs", "wb1", "manifest.json")
    's3://bucket/runs/wb1/manifest.json'
    """
    uri = str(uri)
    if is_remote(uri):
        return posixpath.join(uri.rstrip("/"), *[p.strip("/") for p in parts])
    return os.path.join(_local_path(uri), *parts)


def _local_path(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return parsed.path
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive
        raise ConfigError(
            f"unsupported URI scheme {parsed.scheme!r} in {uri!r}; use a local path or s3://"
        )
    return os.path.abspath(os.path.expanduser(uri))


def resolve(uri: str, s3: S3Options | None = None) -> tuple[pafs.FileSystem, str]:
    """Resolve a URI to ``(filesystem, path)`` as Ray Data and pyarrow take them.

    Args:
        uri: local path, ``file://`` URI or ``s3://bucket/key``.
        s3: S3 settings; default :meth:`S3Options.from_env`.

    Returns:
        A pyarrow file system and the path within it (``bucket/key`` for S3, absolute for local).

    Raises:
        ConfigError: unsupported scheme, or an ``s3://`` URI without a bucket.

    >>> fs, path = resolve("s3://bucket/some/prefix")
    >>> fs.type_name, path
    ('s3', 'bucket/some/prefix')
    >>> resolve("s3://bucket/odd/a?b=1#c.png")[1]
    'bucket/odd/a?b=1#c.png'
    """
    uri = str(uri)
    if is_remote(uri):
        # Split by hand: urlparse would cut a key at "?" or "#" ("a#1.png" and "a#2.png"
        # both becoming "a"), and S3 keys may hold both.
        bucket, _, key = uri.split("://", 1)[1].partition("/")
        if not bucket:
            raise ConfigError(f"S3 URI needs a bucket: {uri!r}")
        path = bucket + "/" + key.lstrip("/")
        return (s3 or S3Options.from_env()).filesystem(), path.rstrip("/")
    return pafs.LocalFileSystem(), _local_path(uri)


def _to_uri(uri_root: str, fs_path: str) -> str:
    return f"s3://{fs_path}" if is_remote(uri_root) else fs_path


def _storage_error(exc: BaseException, uri: str, action: str) -> StorageError:
    """Map pyarrow / OS errors to typed storage errors that name the URI."""
    text = str(exc).strip()
    compact = re.sub(r"[^a-z]", "", text.lower())
    if isinstance(exc, PermissionError) or any(k in compact for k in _DENIED):
        return StorageAccessError(
            f"cannot {action} {uri}: access denied, check the credentials ({text})"
        )
    if isinstance(exc, FileNotFoundError) or any(k in compact for k in _NOT_FOUND):
        return StorageNotFoundError(f"cannot {action} {uri}: not found ({text})")
    return StorageError(f"cannot {action} {uri}: {text}")


_NOT_FOUND = ("nosuchbucket", "nosuchkey", "notfound", "doesnotexist")
_DENIED = (
    "accessdenied",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "forbidden",
    "expiredtoken",
    "invalidtoken",
)


def read_bytes(uri: str, s3: S3Options | None = None) -> bytes:
    """Read a whole object or file.

    Raises:
        StorageNotFoundError: it does not exist.
        StorageAccessError: credentials are refused.
        StorageError: any other storage failure.
    """
    fs, path = resolve(uri, s3)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except (OSError, ValueError) as exc:
        raise _storage_error(exc, uri, "read") from exc


def read_text(uri: str, s3: S3Options | None = None, encoding: str = "utf-8") -> str:
    """Read a text file (UTF-8 by default, a leading BOM is dropped)."""
    return read_bytes(uri, s3).decode(encoding).removeprefix("\ufeff")


def write_bytes(uri: str, data: bytes, s3: S3Options | None = None) -> None:
    """Write a whole object or file; never leaves a partial file under the final name.

    Local files are written to a temporary sibling and renamed into place (atomic on POSIX).
    S3 objects become visible only when the upload completes, so a failed write leaves nothing.

    Raises:
        StorageAccessError: credentials are refused.
        StorageError: any other storage failure.
    """
    fs, path = resolve(uri, s3)
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            directory = os.path.dirname(path)
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual mode
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        else:
            with fs.open_output_stream(path) as f:
                f.write(data)
    except (OSError, ValueError) as exc:
        raise _storage_error(exc, uri, "write") from exc


def write_text(uri: str, text: str, s3: S3Options | None = None) -> None:
    """Write UTF-8 text atomically (see :func:`write_bytes`)."""
    write_bytes(uri, text.encode("utf-8"), s3)


def exists(uri: str, s3: S3Options | None = None) -> bool:
    """True when a file/object or a folder/prefix exists at the URI."""
    fs, path = resolve(uri, s3)
    try:
        info = fs.get_file_info(path)
    except (OSError, ValueError) as exc:
        raise _storage_error(exc, uri, "stat") from exc
    if info.type != pafs.FileType.NotFound:
        return True
    if is_remote(uri):  # a prefix with objects under it but no marker object
        try:
            sel = pafs.FileSelector(path, allow_not_found=True, recursive=False)
            return bool(fs.get_file_info(sel))
        except (OSError, ValueError):
            return False
    return False


def list_files(
    uri: str,
    suffixes: Iterable[str] | None = None,
    recursive: bool = True,
    s3: S3Options | None = None,
) -> list[str]:
    """List the files under a folder or prefix, sorted, as URIs of the same kind.

    Args:
        uri: folder or prefix.
        suffixes: keep only names ending with one of these (case-insensitive), e.g. ``[".jpg"]``.
        recursive: descend into sub-folders.
        s3: S3 settings.

    Raises:
        StorageNotFoundError: the folder, prefix or bucket does not exist.
        StorageAccessError: credentials are refused.
    """
    fs, path = resolve(uri, s3)
    wanted = tuple(s.lower() for s in suffixes) if suffixes else None
    try:
        infos = fs.get_file_info(
            pafs.FileSelector(path, recursive=recursive, allow_not_found=False)
        )
    except (OSError, ValueError) as exc:
        raise _storage_error(exc, uri, "list") from exc
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        name = info.base_name
        if name.startswith(".tmp-"):
            continue
        if wanted and not name.lower().endswith(wanted):
            continue
        out.append(_to_uri(uri, info.path))
    return sorted(out)


def delete(uri: str, s3: S3Options | None = None, missing_ok: bool = True) -> None:
    """Delete a file/object, or a folder/prefix with everything under it."""
    fs, path = resolve(uri, s3)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            fs.delete_file(path)
        elif info.type == pafs.FileType.Directory or (is_remote(uri) and exists(uri, s3)):
            fs.delete_dir(path)
        elif not missing_ok:
            raise StorageNotFoundError(f"cannot delete {uri}: not found")
    except StorageError:
        raise
    except (OSError, ValueError) as exc:
        raise _storage_error(exc, uri, "delete") from exc


def check_readable(uri: str, s3: S3Options | None = None) -> None:
    """Fail fast, before any work, when a location cannot be read.

    Raises:
        StorageNotFoundError: the bucket, folder or object does not exist.
        StorageAccessError: credentials are missing or refused.
    """
    fs, path = resolve(uri, s3)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound and not exists(uri, s3):
            raise StorageNotFoundError(f"{uri} does not exist")
    except StorageError:
        raise
    except (OSError, ValueError) as exc:
        raise _storage_error(exc, uri, "read") from exc


def check_writable(uri: str, s3: S3Options | None = None) -> None:
    """Fail fast when the output location cannot be written: probe with a tiny object.

    Raises:
        StorageNotFoundError: the bucket does not exist.
        StorageAccessError: credentials are missing or refused.
    """
    probe = join(uri, f".probe-{uuid.uuid4().hex}")
    write_bytes(probe, b"", s3)
    delete(probe, s3)


def copy_tree(src: str, dst: str, s3: S3Options | None = None) -> int:
    """Copy a file, or every file under a folder/prefix, to ``dst`` (same kind of storage).

    On S3 each object is copied server-side (``pyarrow.fs`` ``copy_file``: no bytes through
    this process). ``dst`` keeps what it already has; delete it first for an exact copy.

    Returns:
        The number of files copied (0 when ``src`` does not exist).

    Raises:
        ConfigError: ``src`` and ``dst`` are on different kinds of storage.
        StorageError: a copy fails.
    """
    if is_remote(src) != is_remote(dst):
        raise ConfigError(f"copy_tree copies within one storage, got {src!r} -> {dst!r}")
    fs, src_path = resolve(src, s3)
    _, dst_path = resolve(dst, s3)
    try:
        info = fs.get_file_info(src_path)
        if info.type == pafs.FileType.File:
            pairs = [(src_path, dst_path)]
        elif info.type == pafs.FileType.Directory or (is_remote(src) and exists(src, s3)):
            files = fs.get_file_info(pafs.FileSelector(src_path, recursive=True))
            pairs = [
                (f.path, dst_path + f.path[len(src_path) :])
                for f in files
                if f.type == pafs.FileType.File and not f.base_name.startswith(".tmp-")
            ]
        else:
            return 0
        for a, b in pairs:
            if isinstance(fs, pafs.LocalFileSystem):
                os.makedirs(os.path.dirname(b), exist_ok=True)
            fs.copy_file(a, b)
    except (OSError, ValueError) as exc:
        raise _storage_error(exc, src, "copy") from exc
    return len(pairs)
