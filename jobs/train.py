"""``ray job submit`` entrypoint of ``abs-ray train`` (:mod:`abs_ray.cli.train`)::

    ray job submit --working-dir . -- python jobs/train.py --data s3://b/runs/wb1 --out s3://b/train

Every option: ``python jobs/train.py --help``.
"""

from abs_ray.cli.train import main

if __name__ == "__main__":
    main()
