"""The default `fastconv demo` run, timed: the README promises >= 97 % test accuracy on the
embedded digits in under a minute. tests/cli/testdemo.py checks the accuracy; the time is measured
here (a wall-clock check does not belong in a unit test: it fails on a busy machine).

    python bench/demo_default_run.py [--threads N]

Prints the demo's summary, the wall time of the whole run and whether it is under 60 s.
"""
import argparse
import sys
import tempfile
import time

from fastconv.cli import demo

TARGET_SECONDS = 60


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="the demo's --threads")
    args = parser.parse_args(argv)
    demo_parser = argparse.ArgumentParser(prog="fastconv demo")
    demo.add_arguments(demo_parser)
    with tempfile.TemporaryDirectory() as out:
        demo_argv = ["--out", out, "--quiet"]
        if args.threads is not None:
            demo_argv += ["--threads", str(args.threads)]
        t0 = time.perf_counter()
        status = demo.run(demo_parser.parse_args(demo_argv))
        seconds = time.perf_counter() - t0
    verdict = "under" if seconds < TARGET_SECONDS else "OVER"
    print(f"default demo run: {seconds:.1f} s wall time ({verdict} the {TARGET_SECONDS} s target)")
    return status


if __name__ == "__main__":
    sys.exit(main())
