"""The gate engine: pure numpy/pyarrow over predictions and data, no Kubernetes.

Import from the modules (``gates.engine``, ``gates.table``, ``gates.outcome``):
this package imports nothing itself, so that the operator can use the plain
outcome types without loading numpy and pyarrow.
"""
