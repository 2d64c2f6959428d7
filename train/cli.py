"""`destseg-train`: train one DeSTSeg model per category on good images."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional

from destseg.train.model import BACKBONES, SEG_HEAD, SEG_HEADS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="destseg-train",
        description="Train DeSTSeg on good images with synthetic anomalies (defaults: the paper's schedule).",
    )
    p.add_argument("--data", required=True, help="MVTec-AD root (with --category) or a plain folder of good images")
    p.add_argument("--category", help="MVTec-AD category folder under --data; omit for a plain folder")
    p.add_argument("--out", required=True, help="run folder to write (model.safetensors, config.json, train.log)")
    p.add_argument("--backbone", choices=sorted(BACKBONES), help="teacher backbone (default resnet18)")
    p.add_argument("--seg-width", type=int,
                   help="segmentation network channels (paper and default: 256); narrower is faster on edge devices and CPUs")
    p.add_argument("--seg-head", choices=SEG_HEADS,
                   help=f"segmentation head: {SEG_HEAD} (the paper's dense 3x3 ASPP and head convs, default) or light "
                        "(depthwise-separable ones, for edge devices; BENCHMARKS.md has the measured trade-off)")
    p.add_argument("--top-k", type=int,
                   help="image score = mean of the K highest map pixels (paper and default: 100 at 256 x 256; "
                        "keep the same area at other sizes: 25 at 128)")
    p.add_argument("--teacher", default="imagenet", choices=["imagenet", "random"],
                   help="teacher weights: ImageNet (default) or random (tests only, not a real teacher)")
    p.add_argument("--teacher-weights", help="local teacher state dict (.pth or .safetensors) instead of downloading")
    p.add_argument("--dtd", help="Describable Textures Dataset root (images/<class>/*.jpg); default: procedural textures")
    p.add_argument("--image-size", type=int, help="default 256")
    p.add_argument("--batch-size", type=int, help="default 32")
    p.add_argument("--steps-student", type=int, default=1000)
    p.add_argument("--steps-seg", type=int, default=4000)
    p.add_argument("--lr-student", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--workers", type=int, default=2, help="data-loading worker processes")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU with AVX512-BF16/AMX, or GPU)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (options left out are the run's)")
    p.add_argument("--overwrite", action="store_true", help="start again in an --out that holds a run, replacing it")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")
    return p


# Options that define the model: the paper's value for a new run; with --resume, the run's unless given.
MODEL_DEFAULTS: Dict[str, Any] = {"backbone": "resnet18", "seg_width": 256, "seg_head": SEG_HEAD, "top_k": 100,
                                  "image_size": 256, "batch_size": 32}


def _fill_model_options(args: Any) -> None:
    recorded: Dict[str, Any] = {}
    if args.resume:
        from destseg.train.checkpoint import RunError, last_checkpoint, read_config

        try:
            checkpoint = last_checkpoint(args.out)
            config = read_config(checkpoint) if checkpoint is not None else {}
        except RunError:
            config = {}  # train() says what is wrong with the folder
        recorded = {**{k: config.get(k) for k in MODEL_DEFAULTS}, "batch_size": config.get("options", {}).get("batch_size")}
    for key, default in MODEL_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, recorded.get(key) if recorded.get(key) is not None else default)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _fill_model_options(args)
    if args.image_size < 32 or args.image_size % 32:
        print("destseg-train: --image-size must be a multiple of 32 (the student encoder downsamples 32x)", file=sys.stderr)
        return 2
    from destseg.datasets import DatasetError
    from destseg.train.backbones import TeacherWeightsError
    from destseg.train.checkpoint import RunError
    from destseg.train.trainer import TrainOptions, train

    opts = TrainOptions(
        data=args.data, out=args.out, category=args.category, backbone=args.backbone, seg_width=args.seg_width,
        seg_head=args.seg_head,
        top_k=args.top_k, teacher=args.teacher,
        teacher_weights=args.teacher_weights, dtd=args.dtd, image_size=args.image_size,
        batch_size=args.batch_size, steps_student=args.steps_student, steps_seg=args.steps_seg,
        lr_student=args.lr_student, seed=args.seed, device=args.device, workers=args.workers,
        bf16=args.bf16, resume=args.resume, overwrite=args.overwrite, checkpoint_every=args.checkpoint_every, evaluate=not args.no_eval,
    )
    try:
        run = train(opts)
    except (DatasetError, TeacherWeightsError, RunError, ValueError) as exc:
        print(f"destseg-train: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ndestseg-train: interrupted; the last checkpoint in {args.out} is intact, continue with --resume", file=sys.stderr)
        return 130
    print(f"run written to {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
