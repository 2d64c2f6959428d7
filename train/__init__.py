"""Training: the DeSTSeg networks, synthetic anomalies, the two-step schedule and evaluation."""
