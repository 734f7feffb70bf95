"""Entrypoint of ``abs-ray train-detector`` (:mod:`abs_ray.cli.train_detector`)::

    python jobs/train_detector.py --data data/birds --out runs/detector_birds --freeze_backbone true

Every option: ``python jobs/train_detector.py --help``.
"""

from abs_ray.cli.train_detector import main

if __name__ == "__main__":
    main()
