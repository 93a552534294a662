"""``python -m modelgate.trainer``: train from the contract's environment variables."""

from __future__ import annotations

import sys

from modelgate.trainer.train import main

if __name__ == "__main__":
    sys.exit(main())
