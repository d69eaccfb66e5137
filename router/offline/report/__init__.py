"""The A/B report (``rerank-router report``): per-arm latency, cost and quality from the decision
log, bootstrap intervals, a verdict, a table, JSON and a plot."""
