"""The ``fastconv`` command: one sub-command per job, each defined in its own module.

Each sub-command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; they are
imported lazily so that ``fastconv --help`` stays fast and optional extras stay optional.

How every sub-command ends (decided here, in :func:`guard`, for all of them):

- ``0``: success.
- ``1`` (:data:`RUNTIME_ERROR`): a valid command that could not do its job: a file missing,
  unreadable, corrupt or unwritable, a directory where a file is expected (or the reverse), not
  enough memory. One line ``fastconv CMD: error: MESSAGE`` on stderr, naming the file or option.
- ``2`` (:data:`USAGE_ERROR`): the command line itself is invalid, whatever the files: an unknown
  name, a value out of range (argparse's convention; argparse itself exits with 2 for malformed
  options). Same one-line message. ``fastconv`` without a command is one too: it prints the
  help, which lists the commands, on stderr.
- ``3``: ``fastconv bench`` only: the run completed and its bar did not hold (a criterion FAILed).
- ``130`` (:data:`INTERRUPTED`, 128 + SIGINT): interrupted with Ctrl-C; one line
  ``fastconv CMD: interrupted`` on stderr, as other Unix tools do.

A user error never prints a traceback; an unexpected exception (a bug) still does.
"""
import argparse
import importlib
import os
import sys

RUNTIME_ERROR = 1
USAGE_ERROR = 2
INTERRUPTED = 130


class CommandError(Exception):
    """A user error of a sub-command: :func:`guard` prints ``message`` without a traceback and
    returns ``status`` (:data:`RUNTIME_ERROR` by default, or :data:`USAGE_ERROR`)."""

    def __init__(self, message, status=RUNTIME_ERROR):
        super().__init__(message)
        self.status = status


def _os_error_message(exc):
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def _error(prog, message, status):
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return status


def guard(prog, run, *args):
    """``run(*args)`` with the exit policy of the module docstring: its return value, or the
    status of the user error or interruption it raised, after a one-line message on stderr."""
    try:
        return run(*args)
    except CommandError as exc:
        return _error(prog, exc, exc.status)
    except KeyboardInterrupt:
        # on a terminal, start a line of its own after the echoed ^C or a progress bar
        newline = "\n" if sys.stderr.isatty() else ""
        print(f"{newline}{prog}: interrupted", file=sys.stderr, flush=True)
        return INTERRUPTED
    except MemoryError as exc:
        detail = f" ({exc})" if str(exc) else ""
        return _error(prog, f"not enough memory{detail}", RUNTIME_ERROR)
    except BrokenPipeError:
        # stdout closed early (`fastconv bench | head`): stop quietly, as Unix filters do, and keep
        # the interpreter from failing again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return RUNTIME_ERROR
    except OSError as exc:  # permissions, a full disk, a path of the wrong kind
        return _error(prog, _os_error_message(exc), RUNTIME_ERROR)


def check_output_file(path, option):
    """Fail early, before a long run, if ``path`` cannot be written as a file (``option`` names
    the command-line option for the message)."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CommandError(f"{option} {path}: is a directory, not a file")
    if not os.path.isdir(parent):
        raise CommandError(f"{option} {path}: the directory {parent} does not exist")
    if not os.access(path if os.path.exists(path) else parent, os.W_OK):
        raise CommandError(f"{option} {path}: permission denied")


def positive_int(text):
    """argparse type of the counts every sub-command takes (threads, repeats, sizes)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# name -> (module, one-line help)
COMMANDS = {
    "example": ("fastconv.cli.example", "convolve a random batch and check it against the reference"),
    "bench": ("fastconv.cli.bench", "time fastconv against the reference and PyTorch (the benchmark suite)"),
    "filter": ("fastconv.cli.filter", "filter an image file with a classic kernel (blur, sharpen, edges)"),
    "demo": ("fastconv.cli.demo", "train a small CNN (conv-ReLU-pool twice, then a linear layer) on handwritten "
             "digits; draw its filters"),
}


def build_parser():
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="fastconv",
        description="fastconv: fast, exact CNN kernels for NumPy.",
    )
    parser.add_argument("--version", action="version", version=f"fastconv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _main(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        # a usage error, as argparse treats a missing required argument: the help says what to type
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    return guard(f"fastconv {args.command}", args._run, args)


def main(argv=None):
    """The ``fastconv`` command; returns the exit status (see the module docstring)."""
    # Ctrl-C while the sub-command modules are imported or the options parsed
    return guard("fastconv", _main, argv)
