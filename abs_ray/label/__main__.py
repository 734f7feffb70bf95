"""``python -m abs_ray.label`` = ``abs-ray label`` (:mod:`abs_ray.cli.label`)."""

from abs_ray.cli.label import main

if __name__ == "__main__":
    main()
