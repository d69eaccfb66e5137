"""A/B experiments on the request path: arms in config, sticky assignment, and the shadow arm.

The report that compares arms from the decision log lives offline, in :mod:`router.offline.report`.
"""
