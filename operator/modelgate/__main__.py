"""``python -m modelgate``: the operator; with arguments, the command line.

``python -m modelgate`` alone runs the operator against the current
kubeconfig (or the in-cluster service account), as the Helm chart does;
``python -m modelgate run|gate|validate|crds|operator ...`` is the CLI.
"""

import sys

from modelgate.cli import main

sys.exit(main(sys.argv[1:] or ["operator"]))
