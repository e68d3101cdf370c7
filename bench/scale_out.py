"""The scale-out benchmark from a source checkout: ``python bench/scale_out.py [--quick] ...``.

Same as ``fastconv bench --dask``; it lives in ``fastconv/cli/scale_out.py`` so that an installed
package can run it too (see there for what it measures).
"""
import sys

from fastconv.cli.scale_out import main

if __name__ == "__main__":
    sys.exit(main())
