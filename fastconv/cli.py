"""The ``fastconv`` command: one sub-command per job, each defined in its own module.

Each sub-command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; they are
imported lazily so that ``fastconv --help`` stays fast and optional extras stay optional.
"""
import argparse
import importlib


def positive_int(text):
    """argparse type of the counts every sub-command takes (threads, repeats, sizes)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# name -> (module, one-line help)
COMMANDS = {
    "example": ("fastconv._example", "convolve a random batch and check it against the reference"),
    "bench": ("fastconv.bench", "time fastconv against the reference and PyTorch (issue 5's suite)"),
    "filter": ("fastconv._filter_cli", "filter an image file with a classic kernel (blur, sharpen, edges)"),
    "demo": ("fastconv._demo", "train the CNN of the notes on handwritten digits; draw its filters"),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fastconv",
        description="fastconv: fast, exact CNN kernels for NumPy.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["example"] + list(argv or []))
    return args._run(args)
