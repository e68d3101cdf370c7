"""Crash-isolated fuzzing of the six functions against fastconv.reference.

Candidates (tests/strategies.py ``fuzz_candidate``: every dtype, container, layout, size and
geometry value up to and beyond the int64 range, non-finite values) are rebuilt from ``(seed,
index)`` in worker processes, many per worker. A worker announces each candidate before running
it, so a worker that dies (segfault, abort) or hangs names the candidate that killed it; the
remaining candidates go to a fresh worker. Each candidate must either raise TypeError/ValueError
or return what fastconv.reference returns (within the rounding bound of tests/conv_helpers.py,
NaNs at the same places, max-pool indices equal).

FASTCONV_FUZZ_COUNT sets the number of candidates (default: a CI-sized run of a few seconds per
thousand), FASTCONV_FUZZ_SEED the seed, FASTCONV_FUZZ_MISALIGNED=0 leaves out the arrays whose
strides are not a multiple of their itemsize.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from bomb_helpers import linux_only

pytestmark = linux_only  # a worker caps its address space (RLIMIT_AS)

COUNT = int(os.environ.get("FASTCONV_FUZZ_COUNT", "2000"))
SEED = int(os.environ.get("FASTCONV_FUZZ_SEED", "20261204"))
MISALIGNED = os.environ.get("FASTCONV_FUZZ_MISALIGNED", "1") != "0"
BATCH_TIMEOUT = 600  # seconds for one worker's share; a hang shows as the candidate in flight
WORKER_MEMORY = 4 << 30  # address-space cap of a worker: a runaway allocation fails fast

WORKER = textwrap.dedent(r"""
    import json, resource, sys, warnings
    import numpy as np
    seed, first, last, misaligned, cap = (int(v) for v in sys.argv[1:6])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import fastconv, fastconv.reference as ref
    from strategies import describe, fuzz_candidate
    from conv_helpers import rounding_bound
    warnings.simplefilter("ignore")

    def finite_magnitudes(v):
        if isinstance(v, (list, tuple)):  # an array given as nested lists or tuples
            try:
                as_array = np.asarray(v)
            except Exception:
                return v
            v = as_array if as_array.dtype.kind == "f" else v
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            m = np.abs(v.astype(np.float64))
            m[~np.isfinite(m)] = 0
            return m
        return v

    # The reference on the magnitudes of the finite values, in float64: per result, the sum of
    # the magnitudes of its terms. Where that sum passes the dtype's largest value, a sum of
    # those terms overflows or not depending on its order (+-inf, NaN or a finite value): no
    # order is the right one there, so those places are not compared.
    def magnitudes(name, args, kwargs):
        try:
            with np.errstate(all="ignore"):
                out = getattr(ref, name)(*[finite_magnitudes(a) for a in args],
                                         **{k: finite_magnitudes(v) for k, v in kwargs.items()})
        except Exception:
            return None
        return out if isinstance(out, tuple) else (out,)

    # The rounding bound of every kernel test (tests/conv_helpers.py): both results are sums
    # computed in ``dtype``, hence twice the magnitudes; no sum has more terms than the largest
    # array argument has elements. Without magnitudes, the results must be equal.
    def same(a, b, dtype, magnitude, nterms):
        if a is None or b is None:
            return a is None and b is None
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.kind in "iu":
            return bool(np.array_equal(a, b))
        bound = np.zeros(a.shape)
        if magnitude is not None and np.shape(magnitude) == a.shape:
            ordered = np.asarray(magnitude) <= np.finfo(a.dtype).max / 2
            bound = rounding_bound(2 * np.asarray(magnitude), nterms, dtype)
            a, b, bound = a[ordered], b[ordered], bound[ordered]
        with np.errstate(all="ignore"):
            close = (a == b) | (np.abs(a.astype(np.float64) - b) <= bound)
        return bool(np.array_equal(np.isnan(a), np.isnan(b)) and (close | np.isnan(a)).all())

    def report(i, status, detail=""):
        print(json.dumps({"i": i, "status": status, "detail": detail}), flush=True)

    for i in range(first, last):
        print(json.dumps({"start": i}), flush=True)
        name, args, kwargs = fuzz_candidate(seed, i, misaligned)
        extra = {"algorithm": "direct"} if name.startswith("conv") else {}
        try:
            got = getattr(fastconv, name)(*args, **kwargs, **extra)
        except (TypeError, ValueError) as exc:
            report(i, "error")
            continue
        except MemoryError:
            report(i, "memory")
            continue
        except Exception as exc:
            report(i, "fail", f"{type(exc).__name__}: {exc}")
            continue
        try:
            want = getattr(ref, name)(*args, **kwargs)
        except MemoryError:
            report(i, "memory")
            continue
        except Exception as exc:
            report(i, "fail", f"fastconv returned but the reference raised "
                              f"{type(exc).__name__}: {exc}")
            continue
        got = got if isinstance(got, tuple) else (got,)
        want = want if isinstance(want, tuple) else (want,)
        dtype = next((v.dtype for v in got if v is not None and v.dtype.kind == "f"), np.float64)
        mags = magnitudes(name, args, kwargs) or (None,) * len(want)
        nterms = 2 + max([np.size(v) for v in list(args) + list(kwargs.values())
                          if isinstance(v, np.ndarray)] + [1])
        if len(got) != len(want) or len(mags) != len(want) or not all(
                same(a, b, dtype, m, nterms) for a, b, m in zip(got, want, mags)):
            report(i, "fail", "result differs from fastconv.reference")
        else:
            report(i, "ok")
""")


def describe_candidate(index):
    from strategies import describe, fuzz_candidate

    name, args, kwargs = fuzz_candidate(SEED, index, MISALIGNED)
    parts = [describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in kwargs.items()]
    return f"#{index} fastconv.{name}({', '.join(parts)})"


def run_workers(first, last, jobs=2):
    """Run candidates [first, last) in ``jobs`` workers at a time; returns {status: [indices]}
    and {index: detail}. A dead or hung worker's candidate in flight is recorded as 'crash' or
    'hang' and the rest of its share restarts in a new worker."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tests_dir] + sys.path),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    outcomes, details = {}, {}
    pending = []
    step = -(-(last - first) // jobs)
    for lo in range(first, last, max(step, 1)):
        pending.append((lo, min(last, lo + step)))
    while pending:
        running = []
        for lo, hi in pending:
            cmd = [sys.executable, "-c", WORKER, str(SEED), str(lo), str(hi),
                   str(int(MISALIGNED)), str(WORKER_MEMORY)]
            running.append((lo, hi, subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                     stderr=subprocess.PIPE, text=True, env=env,
                                                     cwd=tests_dir)))
        pending = []
        for lo, hi, proc in running:
            try:
                out, err = proc.communicate(timeout=BATCH_TIMEOUT)
                hung = False
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                hung = True
            in_flight, done = None, set()
            for line in out.splitlines():
                rec = json.loads(line)
                if "start" in rec:
                    in_flight = rec["start"]
                else:
                    done.add(rec["i"])
                    outcomes.setdefault(rec["status"], []).append(rec["i"])
                    if rec["detail"]:
                        details[rec["i"]] = rec["detail"]
                    in_flight = None
            if proc.returncode == 0 and not hung:
                continue
            if in_flight is None:  # died outside a candidate (import, start-up)
                raise AssertionError(f"fuzz worker failed outside a candidate: {err[-2000:]}")
            status = "hang" if hung else "crash"
            outcomes.setdefault(status, []).append(in_flight)
            details[in_flight] = f"worker {'hung' if hung else 'died'} (exit {proc.returncode}): " \
                                 f"{err[-500:]}"
            if in_flight + 1 < hi:
                pending.append((in_flight + 1, hi))
    return outcomes, details


@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
def test_fuzz_all_functions():
    outcomes, details = run_workers(0, COUNT)
    seen = sum(len(v) for v in outcomes.values())
    assert seen == COUNT, f"only {seen} of {COUNT} candidates reported"
    bad = sorted(outcomes.get("fail", []) + outcomes.get("crash", []) + outcomes.get("hang", []))
    summary = {k: len(v) for k, v in outcomes.items()}
    print(f"fuzz: {COUNT} candidates, seed {SEED}, misaligned {MISALIGNED}: {summary}")
    # every kind of outcome must occur, or the generator has stopped exercising the kernels
    assert summary.get("ok", 0) > COUNT // 10 and summary.get("error", 0) > COUNT // 10, summary
    if bad:
        lines = [f"{describe_candidate(i)}\n    -> {details.get(i, '')}" for i in bad[:20]]
        pytest.fail(f"{len(bad)} fuzz candidates failed ({summary}); replay with "
                    f"tests.strategies.fuzz_candidate({SEED}, i):\n" + "\n".join(lines))
