"""Time per epoch of the `fastconv demo` model against the same model in PyTorch, in one run.

    python bench/demo_vs_torch.py [--epochs 5] [--threads 1] [--batch-size 32] [--data DIR]

Both train the demo's CNN (same initial weights, same batches in the same order, SGD with
momentum 0.9 and the demo's cosine learning rate) epoch by epoch, alternating fastconv and torch
so that both see the same machine load; both use --threads threads (torch.set_num_threads too).
Prints the median seconds per epoch of each and their final test accuracies (which agree up to
float32 rounding, as the two compute the same thing).
"""

import argparse
import statistics
import sys
import time

import numpy as np

from fastconv import nn, optim
from fastconv.cli import demo
from fastconv import set_num_threads


def torch_twin(model, torch):
    layers = []
    for m in model:
        if isinstance(m, nn.Conv2d):
            layers.append(
                torch.nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
            )
        elif isinstance(m, nn.ReLU):
            layers.append(torch.nn.ReLU())
        elif isinstance(m, nn.MaxPool2d):
            layers.append(torch.nn.MaxPool2d(m.kernel_size, m.stride))
        elif isinstance(m, nn.Flatten):
            layers.append(torch.nn.Flatten())
        elif isinstance(m, nn.Linear):
            layers.append(torch.nn.Linear(m.in_features, m.out_features))
    twin = torch.nn.Sequential(*layers)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return twin


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lr", type=float, default=demo.DEFAULT_LR["sgd"])
    p.add_argument("--data", default=None)
    args = p.parse_args(argv)
    import torch

    set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    name, xtr, ytr, xte, yte = demo.load_data(args.data)
    rng = np.random.default_rng(0)
    model = demo.build_model(xtr.shape[2:], rng=rng)
    twin = torch_twin(model, torch)
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=demo.SGD_MOMENTUM)
    topt = torch.optim.SGD(twin.parameters(), lr=args.lr, momentum=demo.SGD_MOMENTUM)
    loss_fn, tloss_fn = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    txtr, tytr = torch.from_numpy(xtr), torch.from_numpy(ytr)
    n, bs = len(xtr), args.batch_size
    times = {"fastconv": [], "torch": []}
    for epoch in range(args.epochs):
        lr = demo.cosine_lr(args.lr, epoch, args.epochs)
        opt.lr = lr
        for g in topt.param_groups:
            g["lr"] = lr
        order = rng.permutation(n)
        t0 = time.perf_counter()
        for b in range(0, n, bs):
            idx = order[b : b + bs]
            loss_fn(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
        times["fastconv"].append(time.perf_counter() - t0)
        tidx = torch.from_numpy(order)
        t0 = time.perf_counter()
        for b in range(0, n, bs):
            idx = tidx[b : b + bs]
            topt.zero_grad()
            tloss_fn(twin(txtr[idx]), tytr[idx]).backward()
            topt.step()
        times["torch"].append(time.perf_counter() - t0)
    acc = float(np.mean(demo.predict(model, xte) == yte))
    with torch.no_grad():
        tacc = float((twin(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean())
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{name}: {n} train images, batch {bs}, {args.epochs} epochs, {args.threads} thread(s), "
        f"torch {torch.__version__}"
    )
    print(f"model: {demo.describe(model)}")
    for k in times:
        print(
            f"  {k:9s} median {med[k]:.3f} s/epoch  "
            f"(epochs: {', '.join(f'{t:.3f}' for t in times[k])})"
            f"  test acc {acc if k == 'fastconv' else tacc:.2%}"
        )
    print(f"  fastconv / torch time per epoch: {med['fastconv'] / med['torch']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
