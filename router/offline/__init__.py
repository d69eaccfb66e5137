"""Offline tooling, below a line the request path never crosses (tests/test_layers.py).

Calibration and fitting (:mod:`~router.offline.calibration`, :mod:`~router.offline.fitting`),
evaluation and replay on labelled data (:mod:`~router.offline.evaluation`), the A/B report and its
plots (:mod:`~router.offline.report`), and the CLI commands built on them. These modules may import
the request path; nothing on the request path imports them. None is imported by ``import router``.
"""
