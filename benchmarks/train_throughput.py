"""Training throughput (images/s) of step 1 and step 2, fp32 vs bfloat16 autocast.

Measures the optimisation step alone (a fixed batch already in memory), so it shows what
the device can do; data loading runs in workers beside it during real training.

    python benchmarks/train_throughput.py --image-size 256 --batch-size 8 --iters 5
"""
from __future__ import annotations

import argparse
import time

import torch

from destseg.train.model import DeSTSeg
from destseg.train.trainer import make_optimizer, segmentation_step_loss, set_phase_modes, student_step_loss, TrainOptions


def measure(phase: str, bf16: bool, args: argparse.Namespace, device: torch.device) -> float:
    torch.manual_seed(0)
    model = DeSTSeg(args.backbone, args.seg_width).to(device).to(memory_format=torch.channels_last)
    opts = TrainOptions(data="", out="", batch_size=args.batch_size)
    optimizer = make_optimizer(model, phase, opts)
    loss_fn = student_step_loss if phase == "student" else segmentation_step_loss
    set_phase_modes(model, phase)
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    batch = {
        "clean": torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last),
        "augmented": torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last),
        "mask": (torch.rand(args.batch_size, 1, args.image_size, args.image_size, device=device) > 0.9).float(),
    }

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(args.iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.iters * args.batch_size / (time.perf_counter() - tic)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--seg-width", type=int, default=256)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} backbone={args.backbone} "
          f"size={args.image_size} batch={args.batch_size}")
    print(f"{'step':<22}{'fp32 img/s':>12}{'bf16 img/s':>12}{'speed-up':>10}")
    for phase in ("student", "segmentation"):
        fp32 = measure(phase, False, args, device)
        bf16 = measure(phase, True, args, device)
        print(f"{phase:<22}{fp32:>12.2f}{bf16:>12.2f}{bf16 / fp32:>9.2f}x")


if __name__ == "__main__":
    main()
