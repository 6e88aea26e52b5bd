"""``bench/run.py``: the same entry point as ``python -m bench`` (see bench/__main__.py)."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench.__main__ import main

    sys.exit(main())
