"""The benchmark's other engines, each timed only when it is installed (``pip install
"fastconv[bench]"``): ONNX Runtime and OpenVINO (inference engines: forward only) and JAX (forward,
and forward+backward through ``jax.vjp``), beside torch, which fastconv.cli.bench times itself.

Each engine gets the case's layer as its users would run it, in float32 and with the benchmark's
thread count:
- ONNX Runtime and OpenVINO load one ONNX model of the layer (Conv, ConvTranspose, MaxPool or
  AveragePool, then Relu for a conv + ReLU case), the weights as constants; ONNX Runtime with
  ``intra_op_num_threads``, OpenVINO on its CPU plugin with ``INFERENCE_NUM_THREADS``, one stream,
  and ``INFERENCE_PRECISION_HINT=f32`` (on CPUs with bfloat16 instructions it would otherwise
  compute in bfloat16);
- JAX jits ``lax.conv_general_dilated`` (a transposed convolution as the convolution of the
  dilated input with the flipped kernel) and ``lax.reduce_window``, and its forward+backward is
  the vjp of that function: the gradients of the input, weight and bias. XLA's CPU thread pool
  takes every core unless told otherwise before jax is imported: with one thread, ``XLA_FLAGS``
  makes it single-threaded first (it has no setting for other counts).

None of them returns max pooling's indices (fastconv and torch can; the benchmark times both
without them): the table marks it.
"""
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np

Fn = Callable[[], object]


@dataclass
class Peer:
    name: str
    version: str
    make: Callable[..., Tuple[Fn, Optional[Fn]]]  # (case, x, w, b) -> (forward, forward+backward)


# ------------------------------------------------------------------------------ ONNX models
def _onnx_model(case, x, w, b):
    """The case's layer as a serialised ONNX model: input "x", output "y", weights constant."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    p, k, s = case.pad, case.kernel, case.stride
    inits, inputs = [], ["x"]
    if case.kind in ("conv", "conv_transpose"):
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
        inputs += ["w", "b"]
        attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
                     dilations=[case.dilation] * 2, group=case.groups)
        if case.kind == "conv_transpose":
            attrs["output_padding"] = [case.output_padding] * 2
        op = "Conv" if case.kind == "conv" else "ConvTranspose"
    elif case.kind == "max":
        op, attrs = "MaxPool", dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
    else:
        op, attrs = "AveragePool", dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
                                        count_include_pad=int(case.count_include_pad))
    nodes = [helper.make_node(op, inputs, ["y0" if case.activation else "y"], **attrs)]
    if case.activation:
        nodes.append(helper.make_node("Relu", ["y0"], ["y"]))
    graph = helper.make_graph(
        nodes, case.name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what both engines' releases of the last years read
    return model.SerializeToString()


def _onnxruntime_fns(threads, case, x, w, b):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(_onnx_model(case, x, w, b), opts,
                                   providers=["CPUExecutionProvider"])

    def fwd():
        return session.run(None, {"x": x})[0]

    return fwd, None


def _openvino_fns(threads, case, x, w, b):
    import openvino as ov

    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:  # read_model takes ONNX from a file
        path = os.path.join(tmp, "layer.onnx")
        with open(path, "wb") as f:
            f.write(_onnx_model(case, x, w, b))
        model = core.read_model(path)
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def fwd():
        request.infer({0: x}, share_inputs=True)
        return request.get_output_tensor(0).data

    return fwd, None


# ------------------------------------------------------------------------------ JAX
def _jax_layer(case):
    """The case's layer as a function of (x, w, b) in jax.numpy (w and b unused by pooling)."""
    import jax.numpy as jnp
    from jax import lax

    k, s, p, d, g = case.kernel, case.stride, case.pad, case.dilation, case.groups
    dims = ("NCHW", "OIHW", "NCHW")
    hi = lax.Precision.HIGHEST
    window, strides = (1, 1, k, k), (1, 1, s, s)
    pads = ((0, 0), (0, 0), (p, p), (p, p))

    def conv(x, w, b):
        y = lax.conv_general_dilated(x, w, (s, s), [(p, p), (p, p)], rhs_dilation=(d, d),
                                     dimension_numbers=dims, feature_group_count=g, precision=hi)
        y = y + b[None, :, None, None]
        return jnp.maximum(y, 0) if case.activation else y

    def conv_transpose(x, w, b):
        c = x.shape[1]  # torch's (C, K / g, R, S) -> the (K, C / g, R, S) of a convolution
        wk = w.reshape(g, c // g, case.k // g, k, k).transpose(0, 2, 1, 3, 4)
        wk = wk.reshape(case.k, c // g, k, k)[:, :, ::-1, ::-1]
        lo = d * (k - 1) - p
        y = lax.conv_general_dilated(x, wk, (1, 1), [(lo, lo + case.output_padding)] * 2,
                                     lhs_dilation=(s, s), rhs_dilation=(d, d),
                                     dimension_numbers=dims, feature_group_count=g, precision=hi)
        return y + b[None, :, None, None]

    def max_pool(x, w, b):
        return lax.reduce_window(x, -jnp.inf, lax.max, window, strides, pads)

    def avg_pool(x, w, b):
        total = lax.reduce_window(x, 0.0, lax.add, window, strides, pads)
        if case.count_include_pad:
            return total / (k * k)
        count = lax.reduce_window(jnp.ones(x.shape[2:], x.dtype), 0.0, lax.add, (k, k), (s, s),
                                  pads[2:])
        return total / count

    return {"conv": conv, "conv_transpose": conv_transpose, "max": max_pool,
            "avg": avg_pool}[case.kind]


def _jax_fns(case, x, w, b):
    import jax

    layer = _jax_layer(case)
    args = [jax.device_put(a) for a in (x, w if w is not None else np.zeros(1, np.float32),
                                        b if b is not None else np.zeros(1, np.float32))]
    forward = jax.jit(layer)
    weighted = case.kind in ("conv", "conv_transpose")

    # grad_output is an argument, not a constant of the jitted function: XLA would otherwise fold
    # a gradient that does not depend on the input (average pooling's) into a constant
    grad_output = jax.device_put(np.ones(forward(*args).shape, np.float32))

    @jax.jit
    def forward_backward(x, w, b, gy):  # the gradients of the input (and weight and bias)
        if weighted:
            _, pullback = jax.vjp(layer, x, w, b)
        else:
            _, pullback = jax.vjp(lambda x: layer(x, w, b), x)
        return pullback(gy)

    def fwd():
        return forward(*args).block_until_ready()

    def fwd_bwd():
        return jax.block_until_ready(forward_backward(*args, grad_output))

    return fwd, fwd_bwd


# ------------------------------------------------------------------------------ which are here
def _version(module):
    return getattr(__import__(module), "__version__", "?")


def available_peers(threads: int, skip: Tuple[str, ...] = ()) -> List[Peer]:
    """The engines installed here, set to ``threads`` threads (none of them is imported
    otherwise); ``skip`` leaves some out."""
    peers = []
    if "onnxruntime" not in skip and all(importlib.util.find_spec(m) for m in ("onnxruntime",
                                                                                "onnx")):
        peers.append(Peer("onnxruntime", _version("onnxruntime"),
                          lambda *a: _onnxruntime_fns(threads, *a)))
    if "openvino" not in skip and all(importlib.util.find_spec(m) for m in ("openvino", "onnx")):
        peers.append(Peer("openvino", _version("openvino"), lambda *a: _openvino_fns(threads, *a)))
    if "jax" not in skip and importlib.util.find_spec("jax"):
        if threads == 1 and "jax" not in sys.modules:  # XLA's pool otherwise takes every core
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_"
                                       "thread_eigen=false intra_op_parallelism_threads=1").strip()
        peers.append(Peer("jax", _version("jax"), _jax_fns))
    return peers
