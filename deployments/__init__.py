"""Entrypoints of Ray Serve applications (wiring only; the logic is in ``abs_ray.serve``)."""
