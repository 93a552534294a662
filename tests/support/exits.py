"""A verification command that exits with the codes it is given, one per
run, counting its runs in a file: how the tests make a check that could not
run, then one that does, for local mode and for the real Job controller.

Run as ``python -c EXITS_IN_TURN`` with COUNTER (the file) and CODES
("2,0": the first run exits 2, the rest 0) in its environment."""

EXITS_IN_TURN = """
import os, sys
from pathlib import Path
counter, codes = Path(os.environ["COUNTER"]), [int(c) for c in os.environ["CODES"].split(",")]
runs = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(runs + 1))
print(f"run {runs + 1}: exit {codes[min(runs, len(codes) - 1)]}")
sys.exit(codes[min(runs, len(codes) - 1)])
"""
