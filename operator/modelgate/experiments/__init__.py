"""The statistics of judging a challenger model against the live one on the
same traffic: pure Python (the controller decides with them; it loads no
numpy), no Kubernetes.

- ``sequential``: the mixture sequential probability ratio test (mSPRT) of
  a difference of means or of proportions between two arms, with always-valid
  p-values and confidence intervals, so the operator may look as often as it
  likes and stop early either way; superiority of the primary metric and
  non-inferiority of guardrails.
- ``sizing``: the samples per arm an experiment needs, shown before it starts.
"""
