"""One rank of tests/interop/test_ddp.py: the test's CNN on fastconv, wrapped in
``DistributedDataParallel`` (gloo, CPU), trained for a few SGD steps on this rank's half of the
test's batch; the final parameters and the thread counts go to ``OUT`` (an .npz file).

    python ddp_worker.py RANK WORLD_SIZE STORE_PORT OUT

The process group meets at the test's ``TCPStore`` on 127.0.0.1:STORE_PORT (the test holds it,
so the port is free by construction). test_ddp.py imports the model, the batch and the training
loop from here for its single-process run, so both sides run the same code.
"""
import datetime
import sys

import numpy as np
import torch

import fastconv
import fastconv.torch as fct

SEED = 0
BATCH = 16  # images in the whole batch, split evenly between the ranks
STEPS = 3
LR = 0.1
MOMENTUM = 0.9
TIMEOUT = datetime.timedelta(seconds=60)  # a rank waiting for a dead peer gives up


def build_model():
    """conv -> ReLU -> max pool -> conv -> ReLU -> avg pool -> linear on 1x8x8 images, float64,
    its convolutions and pools swapped to fastconv; the same weights in every process."""
    torch.manual_seed(SEED)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(8 * 2 * 2, 10),
    ).double()
    fct.swap_modules(model)
    swapped = [type(m) for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d,
                                                         torch.nn.AvgPool2d))]
    assert swapped == [fct.Conv2d, fct.MaxPool2d, fct.Conv2d, fct.AvgPool2d], swapped
    return model


def batch():
    """The fixed batch ``(images (BATCH, 1, 8, 8) float64, labels (BATCH,))``."""
    g = torch.Generator().manual_seed(SEED + 1)
    return (torch.randn(BATCH, 1, 8, 8, generator=g, dtype=torch.float64),
            torch.randint(0, 10, (BATCH,), generator=g))


def train(model, x, y):
    """STEPS steps of SGD with momentum on the mean cross-entropy over ``(x, y)``."""
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    for _ in range(STEPS):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def parameters(model):
    """The parameters by name, as NumPy arrays (a DDP wrapper's ``module.`` prefix removed)."""
    return {name.removeprefix("module."): p.detach().numpy().copy()
            for name, p in model.named_parameters()}


def main(rank, world_size, store_port, out):
    import torch.distributed as dist

    n = fct.threads_per_rank()  # LOCAL_WORLD_SIZE comes from the test, as torchrun sets it
    fastconv.set_num_threads(n)
    torch.set_num_threads(n)
    store = dist.TCPStore("127.0.0.1", store_port, is_master=False, timeout=TIMEOUT)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                            timeout=TIMEOUT)
    try:
        model = torch.nn.parallel.DistributedDataParallel(build_model())
        x, y = batch()
        share = BATCH // world_size
        train(model, x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share])
        dist.barrier()  # the ranks leave together (destroying the group is collective)
    finally:
        dist.destroy_process_group()
    np.savez(out, threads=np.array([n, fastconv.get_num_threads(), torch.get_num_threads()]),
             **parameters(model))


if __name__ == "__main__":
    rank, world_size, store_port = (int(a) for a in sys.argv[1:4])
    main(rank, world_size, store_port, sys.argv[4])
