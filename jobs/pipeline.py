"""``ray job submit`` entrypoint of ``abs-ray pipeline`` (:mod:`abs_ray.cli.pipeline`)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/pipeline.py \\
        --data s3://bucket/waterbirds --out s3://bucket/runs/wb1

Every option: ``python jobs/pipeline.py --help``.
"""

from abs_ray.cli.pipeline import main

if __name__ == "__main__":
    main()
