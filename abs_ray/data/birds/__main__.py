"""``python -m abs_ray.data.birds``: see :mod:`abs_ray.data.birds.cli`."""

import sys

from abs_ray.data.birds.cli import main

if __name__ == "__main__":
    sys.exit(main())
