"""URIs, object storage and safe image decode/encode."""

from abs_ray.io.image import (
    ACCEPTED_FORMATS,
    DEFAULT_MAX_PIXELS,
    decode_image,
    encode_jpeg,
    encode_png,
    image_size,
)
from abs_ray.io.storage import (
    S3Options,
    check_readable,
    check_writable,
    copy_tree,
    delete,
    exists,
    is_remote,
    join,
    list_files,
    read_bytes,
    read_text,
    resolve,
    write_bytes,
    write_text,
)

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "S3Options",
    "check_readable",
    "check_writable",
    "copy_tree",
    "decode_image",
    "delete",
    "encode_jpeg",
    "encode_png",
    "exists",
    "image_size",
    "is_remote",
    "join",
    "list_files",
    "read_bytes",
    "read_text",
    "resolve",
    "write_bytes",
    "write_text",
]
