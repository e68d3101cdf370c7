"""Train a small convolutional network on handwritten digits with fastconv's kernels, then draw
what it learned. The network is the classic CNN: two stages of 3x3 convolution -> ReLU -> 2x2 max
pooling, then flatten -> one fully connected layer -> softmax over the ten digits.

By default it trains on the 1,797 8x8 digits embedded in the package (UCI "Optical Recognition of
Handwritten Digits", as bundled by scikit-learn; fixed stratified split of 1,438 train / 359 test
images), offline, in a few seconds. --data DIR trains on MNIST-format IDX files instead.

On a terminal it shows a progress bar per epoch (batches/s, loss, ETA). It prints a line per
epoch (train loss, train accuracy over the epoch's batches, test accuracy, seconds), and writes to
--out: weights.npz (the model, loadable with --load), filters.png (each first-layer filter drawn
as a small grey-scale image of its weights), feature_maps.png (a test digit and its feature maps
after each conv layer) and training.png (loss and accuracy per epoch). The same --seed gives the
same numbers whatever --threads is.

Needs the demo extra: pip install "fastconv[demo]" (tqdm, matplotlib, Pillow).
"""

import argparse
import json
import math
import os
import sys
import time
from typing import Any, List

import numpy as np

from .. import datasets, nn, optim
from .. import functional as F
from .._core.threads import get_num_threads, set_num_threads
from ..nn._npz import npz_keys, open_npz, read_npz_array
from . import USAGE_ERROR, CommandError, guard, positive_int

# The defaults reach about 98% test accuracy on the embedded 8x8 digits in about a second.
DEFAULT_LR = {"sgd": 0.05, "adam": 5e-3}
DEFAULT_EPOCHS = 15
DEFAULT_BATCH_SIZE = 32
SGD_MOMENTUM = 0.9
CHANNELS = (16, 32)  # output channels of the conv stages: 6,090 parameters on 8x8 digits
KERNEL_SIZE = 3      # 3x3 convolutions, padded by 1 so that they keep the image size
POOL_SIZE = 2        # 2x2 max pooling with stride 2 halves the image size
NUM_CLASSES = 10     # the digits 0..9
WEIGHTS_FILE = "weights.npz"
PICTURES = ("filters.png", "feature_maps.png", "training.png")
SMALL_IMAGE = 16     # images of at most 16x16: kernel calls too small to share between threads
EVAL_BATCH = 500     # test images per forward call: bounds the activations' memory on MNIST
MAPS_PER_ROW = 16    # feature_maps.png: one row per 16 maps (a 16-channel stage fills one)
PROG = "fastconv demo"
# The options that only training uses, and their defaults. Their parser default is None, so that
# an option given with --load (which trains nothing) is refused rather than silently ignored.
TRAINING_DEFAULTS = {
    "epochs": DEFAULT_EPOCHS,
    "batch_size": DEFAULT_BATCH_SIZE,
    "lr": None,  # DEFAULT_LR of the optimizer
    "optimizer": "sgd",
    "seed": 0,
}


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  fastconv demo                              # embedded 8x8 digits, defaults\n"
        "  fastconv demo --optimizer adam --epochs 30 # Adam instead of SGD\n"
        "  fastconv demo --data ~/mnist --epochs 3    # MNIST IDX files (gzipped or not)\n"
        "  fastconv demo --load fastconv-demo/weights.npz   # evaluate a saved model"
    )
    _add_training_arguments(parser)
    _add_run_arguments(parser)
    _add_file_arguments(parser)


def _add_training_arguments(parser):
    """How the model is trained: epochs, batch size, learning rate, optimiser."""
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"passes over the training set (default: {DEFAULT_EPOCHS})",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help=f"images per optimisation step (default: {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="initial learning rate, decayed to 0 along a cosine over the epochs "
        f"(default: {DEFAULT_LR['sgd']:g} for sgd, {DEFAULT_LR['adam']:g} for adam)",
    )
    parser.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        default=None,
        help=f"sgd (with momentum {SGD_MOMENTUM}) or adam (default: sgd)",
    )


def _add_run_arguments(parser):
    """Threads and seed: how fast the run goes, and which numbers it gives."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="OpenMP threads of the kernels (default: 1 for images of at most "
        f"{SMALL_IMAGE}x{SMALL_IMAGE} pixels, whose kernel calls are too "
        "small to share, else all cores or OMP_NUM_THREADS); the results "
        "do not depend on it",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the initial weights and of the shuffling (default: 0)",
    )


def _add_file_arguments(parser):
    """What is read and written, and what is printed."""
    parser.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="train on the MNIST-format IDX files in DIR (train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte, each optionally .gz) instead of the "
        "embedded 8x8 digits",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="fastconv-demo",
        help="where to write weights.npz and the pictures (default: ./fastconv-demo/)",
    )
    parser.add_argument(
        "--load",
        metavar="WEIGHTS",
        default=None,
        help="evaluate the model saved in WEIGHTS (a weights.npz of an earlier run) "
        "on the test set instead of training; still draws filters.png and "
        "feature_maps.png. The training options (--epochs, --batch-size, --lr, "
        "--optimizer, --seed) are refused with it",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar and no per-epoch lines: only the final summary",
    )


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


# -- the model -----------------------------------------------------------------------------------
def build_model(
    image_size,
    in_channels=1,
    num_classes=NUM_CLASSES,
    channels=CHANNELS,
    rng=None,
    dtype=np.float32,
):
    """The demo's CNN for ``image_size = (H, W)`` inputs: per entry of ``channels``, a 3x3
    convolution (padding 1, size kept) -> ReLU -> 2x2 max pooling (size halved); then flatten ->
    one fully connected layer to ``num_classes`` logits (the softmax is in the loss).

    8x8 digits: 1x8x8 -> 16x4x4 -> 32x2x2 -> 128 -> 10 (6,090 parameters).
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    h, w = image_size
    layers, c = [], in_channels
    for k in channels:
        if h < POOL_SIZE or w < POOL_SIZE:
            raise ValueError(
                f"images of size {image_size} are too small for {len(channels)} conv/pool stages"
            )
        layers += [
            nn.Conv2d(c, k, KERNEL_SIZE, padding=KERNEL_SIZE // 2, dtype=dtype, rng=rng),
            nn.ReLU(),
            nn.MaxPool2d(POOL_SIZE),
        ]
        c, h, w = k, h // POOL_SIZE, w // POOL_SIZE
    layers += [nn.Flatten(), nn.Linear(c * h * w, num_classes, dtype=dtype, rng=rng)]
    return nn.Sequential(*layers)


def describe(model):
    parts = []
    for m in model:
        if isinstance(m, nn.Conv2d):
            parts.append(
                f"conv{m.kernel_size[0]}x{m.kernel_size[1]}({m.in_channels}->{m.out_channels})"
            )
        elif isinstance(m, nn.MaxPool2d):
            parts.append(f"maxpool{m.kernel_size[0]}")
        elif isinstance(m, nn.Linear):
            parts.append(f"linear({m.in_features}->{m.out_features})")
        else:
            parts.append(type(m).__name__.lower())
    n = sum(p.data.size for p in model.parameters())
    return " -> ".join(parts + ["softmax"]) + f"  ({n:,} parameters)"


def predict(model, x, batch_size=EVAL_BATCH):
    """Class predictions for the float images ``x`` (eval mode, in batches)."""
    model.eval()
    out = [np.argmax(model(x[i : i + batch_size]), axis=1) for i in range(0, len(x), batch_size)]
    model.train()
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _feature_maps(model, image):
    """``([(name, maps)], probs)``: the activations after each conv layer (after its ReLU when
    one follows) for one ``(C, H, W)`` image, and the softmax output."""
    found: List[Any]
    x, found, layers = image[None], [], list(model)
    model.eval()
    for i, m in enumerate(layers):
        x = m(x)
        relu_next = i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)
        if isinstance(m, nn.ReLU) and i > 0 and isinstance(layers[i - 1], nn.Conv2d):
            found.append((f"conv{len(found) + 1} + ReLU", x[0]))
        elif isinstance(m, nn.Conv2d) and not relu_next:
            found.append((f"conv{len(found) + 1}", x[0]))
    model.train()
    return found, F.softmax(x[0].astype(np.float64))


def cosine_lr(lr, epoch, epochs):
    """The learning rate of epoch ``epoch`` (0-based): torch's CosineAnnealingLR with
    ``T_max=epochs`` and ``eta_min=0``, stepped once per epoch."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


# -- data ----------------------------------------------------------------------------------------
def load_data(data_dir):
    """(name, x_train, y_train, x_test, y_test) with float32 images (N, 1, H, W) in [0, 1]."""
    if data_dir is None:
        (xtr, ytr), (xte, yte) = datasets.load_digits("train"), datasets.load_digits("test")
        name, top = "embedded UCI digits", datasets.DIGITS_MAX_VALUE
    else:
        (xtr, ytr), (xte, yte) = (
            datasets.load_mnist(data_dir, "train"),
            datasets.load_mnist(data_dir, "test"),
        )
        name, top = f"IDX files in {data_dir}", datasets.MNIST_MAX_VALUE
    if xtr.shape[1:] != xte.shape[1:]:
        raise ValueError(f"train images are {xtr.shape[1:]} but test images are {xte.shape[1:]}")
    return name, datasets.to_float(xtr, top), ytr, datasets.to_float(xte, top), yte


# -- pictures (matplotlib's object API: no pyplot, no display needed) -----------------------------
def _save(fig, path):
    fig.savefig(path, dpi=120)


def draw_filters(model, path, title):
    from matplotlib.figure import Figure

    w = next(m for m in model if isinstance(m, nn.Conv2d)).weight.data
    k = w.shape[0]
    cols = int(np.ceil(np.sqrt(k)))
    rows = int(np.ceil(k / cols))
    fig = Figure(figsize=(1.2 * cols, 1.2 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= k:
            continue
        f = w[i]
        if f.shape[0] == 3:  # an RGB filter: one colour image, its weights scaled to [0, 1]
            img = np.transpose(f, (1, 2, 0))
            img = (img - img.min()) / max(float(np.ptp(img)), 1e-12)
            ax.imshow(img, interpolation="nearest")
        else:
            m = max(float(np.abs(f[0]).max()), 1e-12)
            ax.imshow(f[0], cmap="gray", vmin=-m, vmax=m, interpolation="nearest")
        ax.set_title(str(i), fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def inactive_maps(maps):
    """Which of the ``(C, H, W)`` feature maps are inactive: zero everywhere (a ReLU that never
    fires on this image), drawn as such rather than as a blank square."""
    maps = np.asarray(maps)
    return ~np.any(maps != 0, axis=(1, 2))


def feature_maps_figure(model, image, label):
    """The figure of feature_maps.png: the ``(C, H, W)`` test ``image`` and the model's softmax
    output for it on top, then the maps after each conv layer, on one colour scale per layer
    (with its colour bar), each numbered by its channel; inactive maps are labelled so."""
    from matplotlib.figure import Figure

    stages, probs = _feature_maps(model, image)
    cols = MAPS_PER_ROW
    rows_per_stage = [int(np.ceil(len(maps) / cols)) for _, maps in stages]
    heights = [2.0] + [0.75 * r + 0.45 for r in rows_per_stage]
    fig = Figure(figsize=(cols * 0.62 + 0.9, sum(heights)), layout="constrained")
    subfigs: Any = fig.subfigures(1 + len(stages), 1, height_ratios=heights)  # an array of them
    _draw_prediction(subfigs[0], image, label, probs)
    for sf, (name, maps), r in zip(subfigs[1:], stages, rows_per_stage):
        _draw_stage(sf, name, maps, r, cols)
    return fig


def _draw_prediction(sf, image, label, probs):
    """The digit and a bar chart of the softmax output, the prediction in green."""
    ax_img, ax_bar = sf.subplots(1, 2, width_ratios=[1, 3])
    ax_img.imshow(image[0], cmap="gray_r", interpolation="nearest")
    ax_img.set_axis_off()
    ax_img.set_title(f"test digit (label {label})", fontsize=9)
    pred = int(np.argmax(probs))
    ax_bar.bar(
        range(len(probs)),
        probs,
        color=["tab:green" if i == pred else "tab:gray" for i in range(len(probs))],
    )
    ax_bar.set_xticks(range(len(probs)))
    ax_bar.set_ylim(0, 1)
    ax_bar.tick_params(labelsize=8)
    ax_bar.set_xlabel("digit", fontsize=8)
    ax_bar.set_title(f"softmax output: predicted {pred} ({probs[pred]:.1%})", fontsize=9)


def _draw_stage(sf, name, maps, rows, cols):
    """One conv layer's maps on a shared colour scale, inactive ones labelled."""
    vmin, vmax = min(0.0, float(maps.min())), float(maps.max())
    if vmax <= vmin:  # every map zero: any scale shows them
        vmax = vmin + 1.0
    inactive = inactive_maps(maps)
    axes = sf.subplots(rows, cols, squeeze=False)
    im = None
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= len(maps):
            continue
        im = ax.imshow(maps[i], cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(str(i), fontsize=7, pad=2)
        if inactive[i]:
            ax.text(0.5, 0.5, "inactive", transform=ax.transAxes, ha="center", va="center",
                    fontsize=6, color="white")
    if im is not None:
        bar = sf.colorbar(im, ax=axes, shrink=0.9, aspect=12 * rows, pad=0.01)
        bar.ax.tick_params(labelsize=7)
        bar.set_label("activation", fontsize=7)
    n_off = int(inactive.sum())
    sf.suptitle(
        f"after {name}: {maps.shape[0]} maps of {maps.shape[1]}x{maps.shape[2]}"
        + (f", {n_off} inactive (zero everywhere)" if n_off else ""),
        fontsize=9,
    )


def draw_feature_maps(model, image, label, path):
    """Write feature_maps.png (see :func:`feature_maps_figure`) to ``path``."""
    _save(feature_maps_figure(model, image, label), path)


def draw_training(history, path):
    from matplotlib.figure import Figure

    epochs = np.arange(1, len(history) + 1)
    fig = Figure(figsize=(9, 3.4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * h["train_acc"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * h["test_acc"] for h in history], "s-", label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    _save(fig, path)


# -- the command ---------------------------------------------------------------------------------
def _missing_extras(quiet):
    missing = []
    for module in (["tqdm"] if not quiet else []) + ["matplotlib"]:
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return missing


def _save_weights(model, path, meta):
    state = model.state_dict()
    np.savez(path, __meta__=np.array(json.dumps(meta)), **state)


# A weights file's __meta__ is a short JSON text; the model it describes is the demo's CNN, of a
# few thousand parameters for the embedded digits and a few tens of thousands for MNIST.
META_MAX_BYTES = 1 << 16
MAX_PARAMETERS = 10**8


def _meta_error(path, problem):
    return ValueError(
        f"--load: {path} has a corrupt __meta__ entry ({problem}); it was not written by "
        "fastconv demo"
    )


def _positive_ints(value):
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value
    )


def _parse_meta(text, path):
    """The model description of a weights file, every field checked."""
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise _meta_error(path, f"not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise _meta_error(path, f"a JSON {type(meta).__name__}, not an object")
    for key, n in (("image_size", 2), ("in_channels", None), ("num_classes", None),
                   ("channels", 0)):
        value = meta.get(key)
        ok = (
            _positive_ints(value) and (n == 0 and len(value) > 0 or len(value) == n)  # type: ignore[arg-type]
            if n is not None
            else _positive_ints([value])
        )
        if not ok:
            kind = "an int >= 1" if n is None else f"a list of {n or 'some'} ints >= 1"
            raise _meta_error(path, f"{key} must be {kind}, got {value!r}")
    return meta


def _parameter_count(meta):
    (h, w), c, total = meta["image_size"], meta["in_channels"], 0
    for k in meta["channels"]:
        total += KERNEL_SIZE * KERNEL_SIZE * c * k + k
        c, h, w = k, h // POOL_SIZE, w // POOL_SIZE
    return total + c * h * w * meta["num_classes"] + meta["num_classes"]


def _load_weights(path, image_size, in_channels):
    """``(meta, model)`` of a weights.npz written by this demo, for ``image_size`` images of
    ``in_channels`` channels. The description and every array header are checked before any
    weight is read, so a forged or corrupt file is refused without reading its data."""
    path = os.fspath(path)
    try:
        with open_npz(path) as npz:
            keys = npz_keys(npz)
            meta = _read_meta(npz, keys, path)
            _check_meta_fits(meta, path, image_size, in_channels)
            model = build_model(
                tuple(meta["image_size"]), meta["in_channels"], meta["num_classes"],
                tuple(meta["channels"]), rng=0,
            )
            state = _read_state(npz, keys, path, model)
    except FileNotFoundError:
        raise FileNotFoundError(f"--load: no such file: {path}") from None
    except (IsADirectoryError, ValueError) as exc:
        message = str(exc)
        if not message.startswith("--load"):
            message = f"--load: {message}"
        raise ValueError(message) from None
    model.load_state_dict(state)
    return meta, model


def _read_meta(npz, keys, path):
    """The checked model description (__meta__) of an open weights file."""
    if "__meta__" not in keys:
        raise ValueError(f"{path} has no __meta__ entry; it was not written by fastconv demo")
    text = read_npz_array(
        npz, path, "__meta__", shape=(), kinds="U", max_bytes=META_MAX_BYTES,
        what="a model description",
    )
    return _parse_meta(str(text[()]), path)


def _check_meta_fits(meta, path, image_size, in_channels):
    """ValueError unless the described model takes the data's images and is of the demo's size."""
    if tuple(meta["image_size"]) != tuple(image_size):
        raise ValueError(
            f"the model in {path} is for {tuple(meta['image_size'])} "
            f"images but the data has {tuple(image_size)} images"
        )
    if meta["in_channels"] != in_channels:
        raise ValueError(
            f"the model in {path} is for {meta['in_channels']}-channel images but the "
            f"data has {in_channels}"
        )
    if _parameter_count(meta) > MAX_PARAMETERS:
        raise _meta_error(
            path, f"a model of {_parameter_count(meta):,} parameters is not the demo's"
        )


def _read_state(npz, keys, path, model):
    """The parameters of ``model`` from an open weights file, each header checked first."""
    params = dict(model.named_parameters())
    unexpected = [k for k in keys if k != "__meta__" and k not in params]
    missing = [k for k in params if k not in keys]
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the model its __meta__ describes: missing keys "
            f"{missing}, unexpected keys {unexpected}"
        )
    return {
        name: read_npz_array(npz, path, name, shape=p.shape, what="a parameter")
        for name, p in params.items()
    }


def run(args):
    """Run ``fastconv demo``; the exit status follows :func:`fastconv.cli.guard`."""
    return guard(PROG, _run_restoring_threads, args)


def _training_options(args):
    """``args`` with the training options' defaults filled in; a usage error if one of them is
    given with --load, where it would have no effect."""
    given = [name for name in TRAINING_DEFAULTS if getattr(args, name) is not None]
    if args.load is not None and given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        verb = "has" if len(given) == 1 else "have"
        raise CommandError(
            f"{options} {verb} no effect with --load, which evaluates a saved model "
            "without training it",
            USAGE_ERROR,
        )
    args = argparse.Namespace(**vars(args))
    for name, default in TRAINING_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    return args


def _run_restoring_threads(args):
    args = _training_options(args)
    missing = _missing_extras(args.quiet)
    if missing:
        raise CommandError(
            f"this command needs {' and '.join(missing)}: install the demo extra with "
            'pip install "fastconv[demo]"'
        )
    previous_threads = get_num_threads()
    try:
        return _run(args)
    except (FileNotFoundError, IsADirectoryError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        set_num_threads(previous_threads)


def _prepare_out(path):
    """Create the --out directory, or fail before any work if it cannot hold the results."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CommandError(f"--out {path}: exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"--out {path}: cannot create the directory: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CommandError(f"--out {path}: the directory is not writable")


def _plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def _say(args, *text):
    if not args.quiet:
        print(*text, flush=True)


def _run(args):
    t_start = time.perf_counter()
    _prepare_out(args.out)
    data = load_data(args.data)
    name, xtr, _, xte, _ = data
    _set_threads(args.threads, xtr.shape[2:])
    out = {p: os.path.join(args.out, p) for p in (WEIGHTS_FILE,) + PICTURES}
    _say(
        args,
        f"data: {name}: {len(xtr):,} train / {len(xte):,} test images of "
        f"{xtr.shape[2]}x{xtr.shape[3]}; threads: {get_num_threads()}",
    )
    if args.load is not None:
        return _evaluate_saved_model(args, data, out, t_start)
    return _train_and_report(args, data, out, t_start)


def _set_threads(threads, image_size):
    """--threads if given, else one thread for small images (their kernel calls are too small
    to share between threads), else the default."""
    if threads is not None:
        set_num_threads(threads)
    elif max(image_size) <= SMALL_IMAGE:
        set_num_threads(1)


def _evaluate_saved_model(args, data, out, t_start):
    """--load: the test accuracy of a saved model, and its pictures."""
    _, _, _, xte, yte = data
    _, model = _load_weights(args.load, xte.shape[2:], xte.shape[1])
    _say(args, f"model: {describe(model)}, loaded from {args.load}")
    correct = int(np.sum(predict(model, xte) == yte))
    _draw_model_pictures(model, xte, yte, out)
    print(
        f"test accuracy {correct / len(yte):.2%} ({correct}/{len(yte)}) of {args.load} "
        f"in {time.perf_counter() - t_start:.1f} s; wrote {out['filters.png']}, "
        f"{out['feature_maps.png']}"
    )
    return 0


def _train_and_report(args, data, out, t_start):
    """Train a new model, then save it, draw the pictures and print the summary."""
    name, xtr, _, _, yte = data
    rng = np.random.default_rng(args.seed)  # the initial weights, then the shuffling
    model = build_model(xtr.shape[2:], xtr.shape[1], NUM_CLASSES, CHANNELS, rng=rng)
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    opt = _optimizer(model, args.optimizer, lr)
    _say(args, f"model: {describe(model)}")
    what = f"sgd (momentum {SGD_MOMENTUM})" if args.optimizer == "sgd" else "adam"
    _say(
        args,
        f"training: {_plural(args.epochs, 'epoch')}, batch {args.batch_size}, {what}, lr {lr:g} "
        f"with cosine decay, seed {args.seed}",
    )
    t_train = time.perf_counter()
    history = _train(args, model, opt, lr, data, rng)
    train_secs = time.perf_counter() - t_train
    _save_results(args, model, history, name, lr, data, out)
    correct = int(round(history[-1]["test_acc"] * len(yte))) if history else 0
    per_epoch = train_secs / max(args.epochs, 1)
    print(
        f"test accuracy {correct / max(len(yte), 1):.2%} ({correct}/{len(yte)}) after "
        f"{_plural(args.epochs, 'epoch')}; training {train_secs:.1f} s ({per_epoch:.2f} s/epoch), "
        f"total {time.perf_counter() - t_start:.1f} s"
    )
    print(f"wrote {', '.join(out[p] for p in (WEIGHTS_FILE,) + PICTURES)}")
    return 0


def _optimizer(model, kind, lr):
    if kind == "adam":
        return optim.Adam(model.parameters(), lr=lr)
    return optim.SGD(model.parameters(), lr=lr, momentum=SGD_MOMENTUM)


def _train(args, model, opt, lr, data, rng):
    """Train for --epochs epochs (cosine learning-rate decay, a new shuffle per epoch); a line per
    epoch unless --quiet. Returns the history: one dict per epoch."""
    _, xtr, ytr, xte, yte = data
    loss_fn = nn.CrossEntropyLoss()
    n = len(xtr)
    history = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        opt.lr = cosine_lr(lr, epoch - 1, args.epochs)
        order = rng.permutation(n)
        loss_sum, correct = _train_epoch(args, epoch, model, opt, loss_fn, xtr, ytr, order)
        test_acc = float(np.mean(predict(model, xte) == yte))
        secs = time.perf_counter() - t0
        history.append(
            dict(
                epoch=epoch,
                train_loss=loss_sum / n,
                train_acc=correct / n,
                test_acc=test_acc,
                seconds=secs,
            )
        )
        _say(
            args,
            f"epoch {epoch:>{len(str(args.epochs))}}/{args.epochs}  "
            f"train loss {loss_sum / n:.4f}  train acc {correct / n:7.2%}  "
            f"test acc {test_acc:7.2%}  {secs:5.2f} s",
        )
    return history


def _progress_bar(args, epoch, n_batches):
    """A tqdm bar on stderr for one epoch, or None with --quiet. The bar is drawn only when
    stderr is a terminal: in a log file or a pipe its carriage returns would leave fragments."""
    if args.quiet:
        return None
    from tqdm import tqdm

    return tqdm(
        total=n_batches,
        desc=f"epoch {epoch}/{args.epochs}",
        unit="batch",
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=None,  # tqdm's rule: disabled unless `file` is a terminal
    )


def _train_epoch(args, epoch, model, opt, loss_fn, xtr, ytr, order):
    """One pass over the training set in the given order: ``(summed loss, correct count)``."""
    n, bs = len(xtr), args.batch_size
    n_batches = -(-n // bs)
    bar = _progress_bar(args, epoch, n_batches)
    loss_sum, correct = 0.0, 0
    try:
        for b in range(n_batches):
            idx = order[b * bs : (b + 1) * bs]
            xb, yb = xtr[idx], ytr[idx]
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
            loss_sum += float(loss) * len(idx)
            correct += int(np.sum(np.argmax(logits, axis=1) == yb))
            if bar is not None:
                bar.set_postfix(loss=f"{loss_sum / min((b + 1) * bs, n):.4f}", refresh=False)
                bar.update()
    finally:  # also on Ctrl-C: no half-drawn bar left on the terminal
        if bar is not None:
            bar.close()
    return loss_sum, correct


def _save_results(args, model, history, name, lr, data, out):
    """weights.npz (with the description --load needs) and the three pictures."""
    _, xtr, _, xte, yte = data
    meta = dict(
        image_size=list(xtr.shape[2:]),
        in_channels=int(xtr.shape[1]),
        num_classes=NUM_CLASSES,
        channels=list(CHANNELS),
        data=name,
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=lr,
    )
    _save_weights(model, out[WEIGHTS_FILE], meta)
    _draw_model_pictures(model, xte, yte, out)
    draw_training(history, out["training.png"])


def _draw_model_pictures(model, xte, yte, out):
    k = next(m for m in model if isinstance(m, nn.Conv2d))
    draw_filters(
        model,
        out["filters.png"],
        f"first-layer filters: {k.out_channels} of {k.kernel_size[0]}x{k.kernel_size[1]}\n"
        "(grey = 0, darker = negative, lighter = positive weights)",
    )
    draw_feature_maps(model, xte[0], int(yte[0]), out["feature_maps.png"])
