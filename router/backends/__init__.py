"""Backends: one module per way of scoring (``base`` is the seam), and the registry that builds
them from config (:mod:`router.backends.registry`).

This package imports nothing itself, so importing one backend module (or the seam's types) never
loads the others.
"""
