"""Huge strides, paddings, dilations and kernel sizes (legal in torch up to 2**63 - 1).

Each call that once crashed, hung or allocated gigabytes runs in a subprocess (a crash is then a
test failure, not the end of the run) and is compared with fastconv.reference and, when torch is
importable, with torch. Values that do not fit in an int64 and results that could never be
allocated must raise a ValueError naming the argument / the array.
"""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv
from fastconv import _kernels
from bomb_helpers import linux_only

# Each case: (id, statement computing `got` from fastconv (a result or a tuple of results),
# the same call on `ref` (fastconv.reference), the torch call or None). `np` and `F` exist.
CASES = [
    ("conv-stride-2**31",
     "fc.conv2d(np.ones((1,1,3,3)), np.ones((1,1,1,1)), stride=2**31)",
     "ref.conv2d(np.ones((1,1,3,3)), np.ones((1,1,1,1)), stride=2**31)",
     "F.conv2d(T(np.ones((1,1,3,3))), T(np.ones((1,1,1,1))), stride=2**31)"),
    ("conv-stride-2**62",
     "fc.conv2d(np.ones((1,1,6,8)), np.ones((4,1,3,4)), stride=2**62)",
     "ref.conv2d(np.ones((1,1,6,8)), np.ones((4,1,3,4)), stride=2**62)",
     "F.conv2d(T(np.ones((1,1,6,8))), T(np.ones((4,1,3,4))), stride=2**62)"),
    ("conv-backward-stride-2**62",
     "fc.conv2d_backward(np.ones((1,2,1,1)), np.ones((1,4,4,8)), np.ones((2,4,2,2)), "
     "stride=2**62)",
     "ref.conv2d_backward(np.ones((1,2,1,1)), np.ones((1,4,4,8)), np.ones((2,4,2,2)), "
     "stride=2**62)",
     "torch_conv_backward(np.ones((1,2,1,1)), np.ones((1,4,4,8)), np.ones((2,4,2,2)), "
     "stride=2**62)"),
    # torch (2.13, oneDNN) rejects this one ("could not create a primitive descriptor")
    ("conv-groups-stride-2**63-1",
     "fc.conv2d(np.ones((1,3,8,2),'f4'), np.ones((3,1,3,1),'f4'), stride=2**63-1, "
     "padding=(0,1), groups=3)",
     "ref.conv2d(np.ones((1,3,8,2),'f4'), np.ones((3,1,3,1),'f4'), stride=2**63-1, "
     "padding=(0,1), groups=3)",
     None),
    # no output channel, but 2**33 + 1 output columns: an empty result, and zero gradients
    ("conv-empty-output-huge-width",
     "fc.conv2d(np.ones((1,3,1,9)), np.ones((0,1,3,3)), stride=2**31, "
     "padding=(2, 2**63-1), dilation=2, groups=3).shape",
     "ref.conv2d(np.ones((1,3,1,9)), np.ones((0,1,3,3)), stride=2**31, "
     "padding=(2, 2**63-1), dilation=2, groups=3).shape",
     None),
    ("conv-backward-empty-output-huge-width",
     "fc.conv2d_backward(np.ones((1,0,1,2**33+1)), "
     "np.ones((1,3,1,9)), np.ones((0,1,3,3)), stride=2**31, padding=(2, 2**63-1), dilation=2, "
     "groups=3)",
     "ref.conv2d_backward(np.ones((1,0,1,2**33+1)), "
     "np.ones((1,3,1,9)), np.ones((0,1,3,3)), stride=2**31, padding=(2, 2**63-1), dilation=2, "
     "groups=3)",
     None),
    # torch: "value cannot be converted to type int without overflow"
    ("max-pool-stride-2**59",
     "fc.max_pool2d(np.arange(9.).reshape(1,1,3,3), 1, stride=2**59, return_indices=True)",
     "ref.max_pool2d(np.arange(9.).reshape(1,1,3,3), 1, stride=2**59, return_indices=True)",
     None),
    ("avg-pool-stride-2**59",
     "fc.avg_pool2d(np.arange(9.).reshape(1,1,3,3), 1, stride=2**59)",
     "ref.avg_pool2d(np.arange(9.).reshape(1,1,3,3), 1, stride=2**59)",
     None),
    ("max-pool-kernel-2**62-ceil",
     "fc.max_pool2d(np.arange(3.).reshape(1,1,3,1), 2**62, ceil_mode=True, return_indices=True)",
     "ref.max_pool2d(np.arange(3.).reshape(1,1,3,1), 2**62, ceil_mode=True, return_indices=True)",
     "F.max_pool2d(T(np.arange(3.).reshape(1,1,3,1)), 2**62, ceil_mode=True, "
     "return_indices=True)"),
    ("avg-pool-backward-stride-2**62",
     "fc.avg_pool2d_backward(np.ones((1,1,1,1)), (1,1,3,3), 1, stride=2**62)",
     "ref.avg_pool2d_backward(np.ones((1,1,1,1)), (1,1,3,3), 1, stride=2**62)",
     None),
    # huge padding and stride together: a few outputs, the rows between them never read
    ("conv-padding-and-stride-2**40",
     "fc.conv2d(X, W, stride=(2**40, 3), padding=(2**40, 2), dilation=(2**39, 1))",
     "ref.conv2d(X, W, stride=(2**40, 3), padding=(2**40, 2), dilation=(2**39, 1))",
     "F.conv2d(T(X), T(W), stride=(2**40, 3), padding=(2**40, 2), dilation=(2**39, 1))"),
    ("conv-backward-padding-and-stride-2**40",
     "fc.conv2d_backward(G, X, W, stride=(2**40, 3), padding=(2**40, 2), dilation=(2**39, 1))",
     "ref.conv2d_backward(G, X, W, stride=(2**40, 3), padding=(2**40, 2), dilation=(2**39, 1))",
     "torch_conv_backward(G, X, W, stride=(2**40, 3), padding=(2**40, 2), "
     "dilation=(2**39, 1))"),
    ("avg-pool-huge-kernel-and-padding",
     "fc.avg_pool2d(X[:, :2], (2**62, 3), stride=(2**60, 2), padding=(2**61, 1), ceil_mode=True, "
     "count_include_pad=False)",
     "ref.avg_pool2d(X[:, :2], (2**62, 3), stride=(2**60, 2), padding=(2**61, 1), ceil_mode=True, "
     "count_include_pad=False)",
     "F.avg_pool2d(T(X[:, :2]), (2**62, 3), stride=(2**60, 2), padding=(2**61, 1), "
     "ceil_mode=True, count_include_pad=False)"),
    ("avg-pool-backward-huge-kernel-and-padding",
     "fc.avg_pool2d_backward(np.ones((2,2,2,4)), (2,2,5,6), (2**62, 3), stride=(2**60, 2), "
     "padding=(2**61, 1), ceil_mode=True, count_include_pad=False)",
     "ref.avg_pool2d_backward(np.ones((2,2,2,4)), (2,2,5,6), (2**62, 3), stride=(2**60, 2), "
     "padding=(2**61, 1), ceil_mode=True, count_include_pad=False)",
     None),
    # many outputs, each window covering the whole input: the kernel and padding are clipped
    # (a gather would copy the input once per output row)
    ("max-pool-clipped-kernel-many-outputs",
     "fc.max_pool2d(np.arange(5 * 4630.).reshape(1,1,4630,5), (2**63-1, 1), stride=(2, 1), "
     "padding=(2**62-1, 0), return_indices=True)",
     "ref.max_pool2d(np.arange(5 * 4630.).reshape(1,1,4630,5), (2**63-1, 1), stride=(2, 1), "
     "padding=(2**62-1, 0), return_indices=True)",
     None),
    ("avg-pool-backward-clipped-kernel",
     "fc.avg_pool2d_backward(G4, (2,2,6,5), (2**63-1, 1), stride=(1, 2**63-1), "
     "padding=(2**62-2, 0))",
     "ref.avg_pool2d_backward(G4, (2,2,6,5), (2**63-1, 1), stride=(1, 2**63-1), "
     "padding=(2**62-2, 0))",
     None),
    ("avg-pool-clipped-kernel",
     "fc.avg_pool2d(X, (2**63-1, 1), stride=(1, 2**63-1), padding=(2**62-2, 0))",
     "ref.avg_pool2d(X, (2**63-1, 1), stride=(1, 2**63-1), padding=(2**62-2, 0))",
     None),
    # the same kinds of geometry within torch's int32 pooling sizes, so that torch answers
    ("avg-pool-kernel-2**30-padding-2**29",
     "fc.avg_pool2d(X, (2**30, 3), stride=(2**28, 2), padding=(2**29, 1), ceil_mode=True)",
     "ref.avg_pool2d(X, (2**30, 3), stride=(2**28, 2), padding=(2**29, 1), ceil_mode=True)",
     "F.avg_pool2d(T(X), (2**30, 3), stride=(2**28, 2), padding=(2**29, 1), ceil_mode=True)"),
    ("avg-pool-kernel-2**30-exclude-pad",
     "fc.avg_pool2d(X, (3, 2**30), stride=(1, 2**28), padding=(1, 2**29), ceil_mode=True, "
     "count_include_pad=False)",
     "ref.avg_pool2d(X, (3, 2**30), stride=(1, 2**28), padding=(1, 2**29), ceil_mode=True, "
     "count_include_pad=False)",
     "F.avg_pool2d(T(X), (3, 2**30), stride=(1, 2**28), padding=(1, 2**29), ceil_mode=True, "
     "count_include_pad=False)"),
    ("max-pool-kernel-2**30-dilation",
     "fc.max_pool2d(X, (2**30, 3), stride=(2**28, 1), padding=(2**29, 1), dilation=(1, 2), "
     "return_indices=True, ceil_mode=True)",
     "ref.max_pool2d(X, (2**30, 3), stride=(2**28, 1), padding=(2**29, 1), dilation=(1, 2), "
     "return_indices=True, ceil_mode=True)",
     "F.max_pool2d(T(X), (2**30, 3), stride=(2**28, 1), padding=(2**29, 1), dilation=(1, 2), "
     "return_indices=True, ceil_mode=True)"),
    ("max-pool-huge-kernel-dilation",
     "fc.max_pool2d(X, (2**40, 3), stride=(2**41, 1), padding=(2**39, 1), dilation=(3, 2), "
     "return_indices=True, ceil_mode=True)",
     "ref.max_pool2d(X, (2**40, 3), stride=(2**41, 1), padding=(2**39, 1), dilation=(3, 2), "
     "return_indices=True, ceil_mode=True)",
     "F.max_pool2d(T(X), (2**40, 3), stride=(2**41, 1), padding=(2**39, 1), dilation=(3, 2), "
     "return_indices=True, ceil_mode=True)"),
]

PRELUDE = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import fastconv as fc, fastconv.reference as ref
    from fastconv import _kernels
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 3, 5, 6))
    W = rng.standard_normal((4, 3, 2, 2))
    G = rng.standard_normal((2, 4, 2, 3))
    G4 = rng.standard_normal((2, 2, 4, 1))
""")

CHILD = PRELUDE + textwrap.dedent("""
    def listed(v):
        v = v if isinstance(v, tuple) else (v,)
        return [None if a is None else np.asarray(a).tolist() for a in v]

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    got = eval(sys.argv[1])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    want = eval(sys.argv[2])
    print(json.dumps({"got": listed(got), "want": listed(want), "peak_kb": peak_kb,
                      "workspace": _kernels.workspace_bytes()[0]}))
""")

# torch's answers to every case, in one child (importing torch takes seconds): {case id: the
# results, or None where torch refuses the call}; {} without torch
TORCH_CHILD = PRELUDE + textwrap.dedent("""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print(json.dumps({}))
        sys.exit()
    T = torch.from_numpy
    def torch_conv_backward(go, x, w, **kw):
        x, w = T(x).requires_grad_(), T(w).requires_grad_()
        out = F.conv2d(x, w, **kw)
        out.backward(T(go))
        return x.grad.numpy(), w.grad.numpy(), T(go).sum((0, 2, 3)).numpy()
    results = {}
    for case_id, call in json.loads(sys.argv[1]):
        try:
            t = eval(call)
        except RuntimeError:  # torch's pooling takes int32 sizes only
            results[case_id] = None
        else:
            t = t if isinstance(t, tuple) else (t,)
            results[case_id] = [np.asarray(a).tolist() for a in t]
    print(json.dumps(results))
""")


def run_child(code, *args, timeout=300):
    """Run ``code`` in a fresh interpreter with the fastconv under test; the JSON it prints."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    # from the tests folder: a child started in the repository root would import the source
    # folder's fastconv (the first entry of its path), not the one under test
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=os.path.dirname(os.path.abspath(__file__)))
    assert proc.returncode == 0, (
        f"subprocess died (exit {proc.returncode}) on {args[:1]}: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def assert_same(got, want, what):
    assert len(got) == len(want), what
    for a, b in zip(got, want):
        if a is None or b is None:
            assert a is None and b is None, what
            continue
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-12,
                                   atol=1e-12, err_msg=what)


@pytest.fixture(scope="module")
def torch_answers():
    answers = run_child(TORCH_CHILD, json.dumps([(c[0], c[3]) for c in CASES if c[3] is not None]))
    if importlib.util.find_spec("torch") is not None:  # then torch answered most cases
        assert sum(a is not None for a in answers.values()) > len(answers) // 2, answers.keys()
    return answers


@linux_only  # the child reports its peak resident memory
@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
@pytest.mark.parametrize("case_id, call, ref_call, torch_call", CASES, ids=[c[0] for c in CASES])
def test_huge_geometry_matches_reference_and_torch(case_id, call, ref_call, torch_call,
                                                   torch_answers):
    result = run_child(CHILD, call, ref_call)
    assert_same(result["got"], result["want"], f"{case_id}: fastconv vs fastconv.reference")
    if torch_answers.get(case_id) is not None:
        assert_same(result["got"], torch_answers[case_id], f"{case_id}: fastconv vs torch")
    # one small output: no workspace or allocation may scale with the stride or the kernel
    assert result["peak_kb"] < 64 * 1024, result["peak_kb"]
    assert result["workspace"] < 4 << 20, result["workspace"]


@linux_only  # the child reports its peak resident memory
@pytest.mark.parametrize("call", [
    "fc.conv2d(np.ones((1,1,3,3)), np.ones((1,1,1,1)), stride=16384)",
    "fc.conv2d_backward(np.ones((1,1,1,1)), np.ones((1,1,3,3)), np.ones((1,1,1,1)), stride=16384)",
    "fc.max_pool2d(np.ones((1,1,3,3)), 1, stride=2**24)",
    "fc.avg_pool2d(np.ones((1,1,3,3)), 1, stride=2**24)",
    "fc.avg_pool2d_backward(np.ones((1,1,1,1)), (1,1,3,3), 1, stride=2**24)",
])
def test_large_stride_takes_no_memory(call):
    """These once took 2 GB (a stride x stride phase buffer) for one output value."""
    result = run_child(CHILD, call, call.replace("fc.", "ref."))
    assert_same(result["got"], result["want"], call)
    assert result["peak_kb"] < 16 * 1024, result["peak_kb"]
    assert result["workspace"] < 1 << 20, result["workspace"]


X = np.ones((1, 2, 3, 3))
W = np.ones((2, 2, 1, 1))


@pytest.mark.parametrize("value", [2**63, 2**64, -(2**63) - 1])
@pytest.mark.parametrize("call, name", [
    (lambda v: fastconv.conv2d(X, W, stride=v), "stride"),
    (lambda v: fastconv.conv2d(X, W, padding=(0, v)), "padding"),
    (lambda v: fastconv.conv2d(X, W, dilation=v), "dilation"),
    (lambda v: fastconv.conv2d(np.ones((1, 0, 3, 3)), np.ones((0, 0, 1, 1)), groups=v), "groups"),
    (lambda v: fastconv.conv2d_backward(np.ones((1, 2, 1, 1)), X, W, stride=(v, 1)), "stride"),
    (lambda v: fastconv.max_pool2d(X, 1, stride=v), "stride"),
    (lambda v: fastconv.max_pool2d(X, v), "kernel_size"),
    (lambda v: fastconv.max_pool2d(X, 1, dilation=v), "dilation"),
    (lambda v: fastconv.avg_pool2d(X, 1, padding=v), "padding"),
    (lambda v: fastconv.avg_pool2d(X, 1, divisor_override=v), "divisor_override"),
    (lambda v: fastconv.avg_pool2d_backward(np.ones((1, 2, 3, 3)), X.shape, (1, v)),
     "kernel_size"),
])
def test_beyond_int64_is_a_value_error_naming_the_argument(call, name, value):
    with pytest.raises(ValueError, match=name):
        call(value)


@pytest.mark.parametrize("call, what", [
    (lambda: fastconv.conv2d(X, W, padding=2**40), "the output of shape"),
    (lambda: fastconv.conv2d(X, W, padding=(0, 2**40)), "the output of shape"),
    (lambda: fastconv.conv2d_backward(np.ones((1, 2, 1, 1)), X, W, padding=2**40),
     "the output of shape"),
    (lambda: fastconv.avg_pool2d_backward(np.ones((1, 1, 1, 1)), (1, 1, 2**40, 2**40), 2**40),
     r"grad_input \(input_shape\) of shape"),
    (lambda: fastconv.max_pool2d_backward(np.ones((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), np.int64),
                                          (1, 1, 2**40, 2**40)), r"grad_input \(input_shape\) of shape"),
])
def test_unallocatable_result_is_a_value_error_before_allocating(call, what):
    held = _kernels.output_cache_bytes()
    with pytest.raises(ValueError, match=what):
        call()
    assert _kernels.output_cache_bytes() == held


def test_ordinary_geometry_keeps_the_kernels_path():
    """The reduction leaves ordinary layers alone (their results stay bitwise the same)."""
    from fastconv._core.conv_geometry import conv_geometry
    from fastconv._core.direct import kernel_plan
    from fastconv._core.pool import pool_geometry, pool_plan

    for shape, wshape, kw in [((2, 3, 32, 32), (8, 3, 3, 3), dict(stride=2, padding=1)),
                              ((1, 4, 224, 224), (4, 4, 7, 7), dict(stride=2, padding=3)),
                              ((1, 2, 9, 9), (2, 2, 1, 1), dict(stride=4)),
                              ((1, 2, 17, 17), (2, 2, 3, 3), dict(dilation=4, padding=4))]:
        g = conv_geometry(shape, wshape, kw.get("stride", 1), kw.get("padding", 0),
                          kw.get("dilation", 1), 1)
        plan = kernel_plan(shape, wshape, g)
        kept = ("stride", "dilation", "pad_top", "pad_left", "groups", "out_h", "out_w")
        assert not plan.gathered
        assert [getattr(plan.geometry, f) for f in kept] == [getattr(g, f) for f in kept]
    for shape, args in [((1, 3, 32, 32), (3, 2, 1)), ((1, 3, 224, 224), (3, 2, 1)),
                        ((1, 1, 9, 9), (2, 2, 0))]:
        g = pool_geometry(shape, *args)
        plan = pool_plan(shape, g, True)
        assert plan.geometry == g and not plan.gathered
