"""``python -m benchmarks.run`` (``make bench``): the benchmark harness's entry point.

Everything is in :mod:`benchmarks.cli` (options, ``main``) and the modules it names; nothing
imports this one.
"""

import sys

from benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main())
