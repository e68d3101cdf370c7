"""Run the benchmark suite from a source checkout: ``python bench/run.py [--quick] ...``.

Same as ``python -m fastconv bench``; the suite itself lives in ``fastconv/bench.py`` so that an
installed package can run it too.
"""
import sys

from fastconv.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
