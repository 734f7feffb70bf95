"""``python -m abs_ray.cli`` = ``abs-ray``."""

import sys

from abs_ray.cli import main

sys.exit(main())
