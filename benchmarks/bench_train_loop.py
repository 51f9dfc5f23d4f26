"""Training throughput: diffnb's loop against the textbook loop, same model, same config, one run.

    python benchmarks/bench_train_loop.py                       # CPU, class-conditioned FM, quick size
    python benchmarks/bench_train_loop.py --device cuda --num-hiddens 64 --images 60000

The textbook loop is what most course code does: a ``DataLoader`` over the torchvision dataset with
``ToTensor`` (one PIL image at a time), each batch moved to the device, fp32.  diffnb's loop keeps
the dataset as one tensor on the device and takes index slices of a device-side permutation.  Both
train the same UNet with the same objective, batch size, optimizer and number of images; the
script prints images per second of each and the ratio.  It is a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

import diffnb
from diffnb.b import flow
from diffnb.b.digits import default_synthetic_root, make_synthetic_mnist
from diffnb.b.train import TrainConfig, build_model, train


def textbook_loop(cfg: TrainConfig, root, device: torch.device, n_images: int) -> float:
    ds = datasets.MNIST(root, train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(Subset(ds, range(n_images)), batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    model = build_model(cfg).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.1 ** (1 / cfg.epochs))
    _sync(device)
    t0 = time.perf_counter()
    seen = 0
    for _ in range(cfg.epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = flow.class_fm_forward(model, x, y, cfg.p_uncond)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += x.shape[0]
        sched.step()
    _sync(device)
    return seen / (time.perf_counter() - t0)


def diffnb_loop(cfg: TrainConfig, device: torch.device, cuda_graph: bool | None = None) -> float:
    data = diffnb.load_digits(cfg.data, train=True, limit=cfg.train_limit, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        _sync(device)
        t0 = time.perf_counter()
        res = train(cfg, data.images, data.labels, device=device, run_dir=tmp, progress=False, cuda_graph=cuda_graph)
        _sync(device)
        seconds = time.perf_counter() - t0
    return len(res.losses) * cfg.batch_size / seconds


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--num-hiddens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--images", type=int, default=2048, help="training images per epoch")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="alternate the two loops this many times")
    args = ap.parse_args()

    device = diffnb.get_device(args.device)
    root = make_synthetic_mnist(default_synthetic_root(0))
    cfg = TrainConfig(name="bench", objective="class_fm", num_hiddens=args.num_hiddens,
                      batch_size=args.batch_size, lr=1e-2, epochs=args.epochs, train_limit=args.images,
                      data="synthetic")
    print(f"device {device}, class-conditioned FM, D={cfg.num_hiddens}, batch {cfg.batch_size}, "
          f"{args.images} images x {cfg.epochs} epochs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    textbook, ours, eager = [], [], []
    for r in range(args.repeats):        # alternate, so drift in machine load hits all alike
        textbook.append(textbook_loop(cfg, root, device, args.images))
        ours.append(diffnb_loop(cfg, device))
        line = f"  repeat {r + 1}: textbook {textbook[-1]:8.0f} img/s   diffnb {ours[-1]:8.0f} img/s"
        if device.type == "cuda":        # how much of it the CUDA graph gives
            eager.append(diffnb_loop(cfg, device, cuda_graph=False))
            line += f"   diffnb without CUDA graph {eager[-1]:8.0f} img/s"
        print(line)
    tb, dn = max(textbook), max(ours)
    print(f"best of {args.repeats}: textbook {tb:.0f} img/s, diffnb {dn:.0f} img/s, ratio {dn / tb:.2f}x")
    if eager:
        print(f"diffnb without CUDA graph {max(eager):.0f} img/s, ratio {max(eager) / tb:.2f}x")


if __name__ == "__main__":
    main()
