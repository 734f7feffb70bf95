"""The files of a data set: listed and read without leaving its root.

A local data set's **root** is the folder :func:`~abs_ray.data.layouts.load_dataset` reads
(for a ``metadata.csv`` or manifest file: the file's folder); :func:`data_root` names it.
The rule, enforced when each row is read (:func:`read_data_file`):

- a file whose path lies under the root must *really* lie under it: a symbolic link on the
  way that leaves the root (``images/x.png -> /etc/passwd``, ``cls -> /home``) is refused
  with :class:`~abs_ray.errors.OutsideDataRootError`, a per-row error, and nothing of the
  target is read. Links that stay inside the root are followed;
- a row that names a file elsewhere explicitly (an absolute path or ``../`` in a manifest)
  is the user's choice and is read;
- only regular files are read: a directory, pipe, socket or device named like an image gives
  :class:`~abs_ray.errors.NotAFileError` (a pipe would block the reader forever, a device
  such as ``/dev/zero`` would never end), a file over ``max_bytes`` an
  :class:`~abs_ray.errors.ImageTooLargeError`, without reading it.

Object storage has no links or special files: ``s3://`` URIs are read as they are, at most
``max_bytes`` of them.

:func:`list_image_files` lists class folders: every entry named like an image is listed,
whatever it is (the reader then refuses what is not a regular file, so a directory named
``x.png`` is a recorded error, not silently skipped), and no linked folder is descended.

Example:
    >>> import os, tempfile
    >>> root, elsewhere = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> for folder in (root, elsewhere):
    ...     with open(os.path.join(folder, "a.png"), "wb") as f:
    ...         _ = f.write(b"pixels")
    >>> os.symlink(os.path.join(elsewhere, "a.png"), os.path.join(root, "b.png"))
    >>> read_data_file(os.path.join(root, "a.png"), root)
    b'pixels'
    >>> read_data_file(os.path.join(root, "b.png"), root)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    abs_ray.errors.OutsideDataRootError: ...b.png: a symbolic link on this path leads outside...
    >>> read_data_file(os.path.join(elsewhere, "a.png"), root)  # named explicitly: read
    b'pixels'
"""

from __future__ import annotations

import logging
import os
import stat

from abs_ray.errors import (
    ImageTooLargeError,
    NotAFileError,
    OutsideDataRootError,
    StorageError,
    StorageNotFoundError,
)
from abs_ray.io import S3Options, is_remote, list_files, resolve

logger = logging.getLogger(__name__)

__all__ = ["data_root", "is_inside", "list_image_files", "read_data_file"]

_DATA_FILE_SUFFIXES = (".csv", ".parquet")


def data_root(uri: str) -> str | None:
    """The local root folder of the data set at ``uri``; None for object storage.

    >>> data_root("/data/wb/metadata.csv"), data_root("/data/wb/"), data_root("s3://b/wb")
    ('/data/wb', '/data/wb', None)
    """
    uri = str(uri)
    if is_remote(uri):
        return None
    path = resolve(uri)[1]
    if path.lower().endswith(_DATA_FILE_SUFFIXES) and not os.path.isdir(path):
        path = os.path.dirname(path)
    return os.path.normpath(path)


def is_inside(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or below it (paths compared as given, not resolved).

    >>> is_inside("/data/wb/images/a.png", "/data/wb"), is_inside("/data/wb2/a.png", "/data/wb")
    (True, False)
    """
    path, root = os.path.normpath(path), os.path.normpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def read_data_file(
    uri: str,
    root: str | None = None,
    s3: S3Options | None = None,
    max_bytes: int | None = None,
) -> bytes:
    """Read one file of a data set, refusing what leaves the root or is not a regular file.

    Args:
        uri: local path (or ``file://``) or ``s3://`` URI.
        root: the data set's local root (:func:`data_root`); None checks no containment.
        s3: S3 settings for ``s3://`` URIs.
        max_bytes: refuse files larger than this (checked before reading locally; in object
            storage, reading stops after ``max_bytes + 1``).

    Returns:
        The file's bytes.

    Raises:
        OutsideDataRootError: ``uri`` lies under ``root`` but resolves (through a symbolic
            link) outside it.
        NotAFileError: a directory, pipe, socket or device.
        ImageTooLargeError: more than ``max_bytes``.
        StorageNotFoundError: nothing there (also a dangling link).
        StorageError: any other failure (e.g. a link loop), with the URI and the reason.

    No message quotes the file's bytes, nor names where an escaping link points.
    """
    if is_remote(uri):
        return _read_remote(uri, s3, max_bytes)
    path = resolve(uri)[1]
    target = os.path.realpath(path)
    under_root = root is not None and is_inside(path, root)
    if under_root and not is_inside(target, os.path.realpath(root)):
        raise OutsideDataRootError(
            f"{uri}: a symbolic link on this path leads outside the data root {root}; "
            "refused (a manifest may name files outside the root explicitly)"
        )
    # O_NONBLOCK: opening a pipe must not wait for a writer; O_NOFOLLOW: the target checked
    # above must not be swapped for a link before it is opened.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags)
    except FileNotFoundError as exc:
        raise StorageNotFoundError(f"cannot read {uri}: not found") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {uri}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotAFileError(f"cannot read {uri}: a {_kind(info.st_mode)}, not a regular file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise ImageTooLargeError(
                f"{uri} is {info.st_size} bytes, over the limit of {max_bytes} bytes"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise StorageError(f"cannot read {uri}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if max_bytes is not None and len(data) > max_bytes:  # it grew while being read
        raise ImageTooLargeError(f"{uri} is over the limit of {max_bytes} bytes")
    return data


def _read_remote(uri: str, s3: S3Options | None, max_bytes: int | None) -> bytes:
    from abs_ray.io.storage import _storage_error  # the one mapping of storage failures

    fs, path = resolve(uri, s3)
    try:
        with fs.open_input_stream(path) as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except (OSError, ValueError) as exc:
        raise _storage_error(exc, uri, "read") from exc
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageTooLargeError(f"{uri} is over the limit of {max_bytes} bytes")
    return data


def list_image_files(
    root: str, suffixes: tuple[str, ...], s3: S3Options | None = None
) -> list[str]:
    """Every entry under ``root`` named like an image (``suffixes``, any case), sorted.

    Locally, entries whose names start with ``.`` are skipped; an entry named like an image
    is listed whatever it is (file, link, directory, pipe) and never descended; other
    folders are descended, but never through a link: a linked folder inside the root is
    listed under its real path anyway, and one leading outside is left out with a warning
    (walking it could mean walking the whole file system). In object storage:
    :func:`abs_ray.io.list_files`.

    Raises:
        StorageNotFoundError: ``root`` does not exist.
        StorageError: a folder cannot be listed.
    """
    if is_remote(root):
        return list_files(root, suffixes=suffixes, recursive=True, s3=s3)
    wanted = tuple(s.lower() for s in suffixes)
    real_root = os.path.realpath(root)
    found: list[str] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError as exc:
            raise StorageNotFoundError(f"cannot list {folder}: not found") from exc
        except OSError as exc:
            raise StorageError(f"cannot list {folder}: {exc.strerror or exc}") from exc
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.name.lower().endswith(wanted):
                found.append(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            elif (
                entry.is_symlink()
                and entry.is_dir()
                and not is_inside(os.path.realpath(entry.path), real_root)
            ):
                logger.warning(
                    "not listing %s: a link to a folder outside the data root %s", entry.path, root
                )
    return sorted(found)
