"""``python -m modelgate``: the command-line interface (see ``modelgate --help``)."""

import sys

from modelgate.cli import main

sys.exit(main())
