"""The gate engine: pure numpy/pyarrow over predictions and data, no Kubernetes."""

from modelgate.gates.engine import (
    CheckEvaluation,
    GateEvaluation,
    GateInputs,
    evaluate_gate,
    gate_outcome,
)
from modelgate.gates.table import Table, TableError, read_table

__all__ = [
    "CheckEvaluation",
    "GateEvaluation",
    "GateInputs",
    "Table",
    "TableError",
    "evaluate_gate",
    "gate_outcome",
    "read_table",
]
