"""``ray job submit`` entrypoint of ``abs-ray audit`` (:mod:`abs_ray.cli.audit`)::

    ray job submit --working-dir . -- python jobs/audit.py --data s3://b/runs/wb1 \
        --model models:/abs-ray-classifier/3 --out s3://b/audits/wb1

Every option: ``python jobs/audit.py --help``.
"""

from abs_ray.cli.audit import main

if __name__ == "__main__":
    main()
