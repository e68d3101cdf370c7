"""Data-parallel training across processes: the CNN of ``fastconv demo`` in PyTorch, its
convolutions and pools on fastconv, trained with ``DistributedDataParallel`` on the embedded 8x8
digits.

One machine, two processes::

    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py

Two machines, two processes each (run the same command on both; ``HOST:29500`` is an address of
the first machine that the second can reach)::

    torchrun --nnodes 2 --nproc_per_node 2 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        examples/ddp_train.py

Without torchrun (``python examples/ddp_train.py``) it trains in one process.

Every process (a *rank*) builds the same model, swaps its layers to fastconv
(``fastconv.torch.swap_modules``) and wraps it in ``DistributedDataParallel`` (gloo backend, CPU).
Each epoch, ``DistributedSampler`` hands every rank its own 1/world_size of the shuffled images;
after each backward pass DDP averages the gradients across the ranks, so all ranks take the same
step and hold the same weights: those one process would compute on the combined batch
(``--batch-size`` x world_size images), up to rounding. fastconv and torch run on
``fastconv.torch.threads_per_rank()`` threads per rank: the machine's cores divided by the
number of ranks on it (torchrun would otherwise leave each on one thread; ``--threads`` sets
another count: 8x8 digits make kernel calls too small to gain from several threads, which is why
``fastconv demo`` trains them on one, but larger images do). Rank 0 prints the loss
and the test accuracy after every epoch and, with ``--save``, writes the weights (a
``state_dict`` that loads into the same model, on fastconv or on torch).
"""
import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

try:
    import fastconv
except ImportError:  # run from a source checkout
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import fastconv
import fastconv.torch as fct
from fastconv import datasets


def build_model():
    """The demo's CNN for 1x8x8 digits: two stages of 3x3 conv -> ReLU -> 2x2 max pool, then one
    linear layer to ten logits (6,090 parameters)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 2 * 2, 10),
    )


def digits(split):
    """The embedded digits as a TensorDataset of (float32 (N, 1, 8, 8) in [0, 1], labels)."""
    images, labels = datasets.load_digits(split)
    x = datasets.to_float(images, datasets.DIGITS_MAX_VALUE)
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(labels))


def start(threads=None):
    """Join the process group: torchrun's (its environment variables), or one of one process;
    then set the threads of fastconv and torch (default: this rank's share of the cores)."""
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    else:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    threads = threads or fct.threads_per_rank()
    fastconv.set_num_threads(threads)
    torch.set_num_threads(threads)
    return dist.get_rank(), dist.get_world_size(), threads


def summed(*values):
    """The sums over all ranks of a few numbers (one all-reduce)."""
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def train_epoch(model, loader, opt):
    """One pass over this rank's images; the mean loss over every rank's images."""
    model.train()
    total, count = 0.0, 0
    for x, y in loader:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()  # DDP averages the gradients across the ranks here
        opt.step()
        total, count = total + loss.item() * len(y), count + len(y)
    total, count = summed(total, count)
    return total / count


@torch.no_grad()
def accuracy(model, loader):
    """The fraction of the test images classified right, over every rank's share."""
    model.eval()
    right, count = 0, 0
    for x, y in loader:
        right += (model(x).argmax(1) == y).sum().item()
        count += len(y)
    right, count = summed(right, count)
    return right / count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32, help="images per rank and step")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", metavar="PATH", help="write the trained weights (rank 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per rank (default: fastconv.torch.threads_per_rank())")
    args = parser.parse_args(argv)

    rank, world_size, threads = start(args.threads)
    try:
        torch.manual_seed(args.seed)  # DDP copies rank 0's initial weights to the others anyway
        model = DistributedDataParallel(fct.swap_modules(build_model()))
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
        train, test = digits("train"), digits("test")
        sampler = DistributedSampler(train, shuffle=True, seed=args.seed)
        train_loader = DataLoader(train, batch_size=args.batch_size, sampler=sampler)
        test_loader = DataLoader(test, batch_size=500,
                                 sampler=DistributedSampler(test, shuffle=False))
        if rank == 0:
            print(f"{world_size} rank(s), {threads} thread(s) each; {len(train)} training images,"
                  f" {args.batch_size * world_size} per step", flush=True)
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
            t0 = time.perf_counter()
            loss = train_epoch(model, train_loader, opt)
            acc = accuracy(model, test_loader)
            if rank == 0:
                print(f"epoch {epoch + 1}/{args.epochs}: loss {loss:.4f}, test accuracy "
                      f"{100 * acc:.1f}%, {time.perf_counter() - t0:.2f} s", flush=True)
        if args.save and rank == 0:
            torch.save(model.module.state_dict(), args.save)
            print(f"wrote {args.save}")
        # every rank leaves together: destroying the group is collective, and a rank that tears
        # down gloo's connections while another still works on its own can abort at exit
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
