"""A/B experiments: arms in config, sticky assignment, shadow arms with a spend cap, and the
report that compares arms from the decision log (``rerank-router report``)."""
