"""The two-step DeSTSeg schedule (spec: Training) with checkpoints, resume and logging.

Step 1 trains the denoising student against the frozen teacher; step 2 freezes the student
(BN statistics included) and trains the segmentation network. Both steps share one loop
(:func:`_run_phase`); each phase only says how a batch becomes a loss.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import destseg
from destseg.cpu import native_bf16
from destseg.datasets import good_images, has_test_split
from destseg.train.backbones import load_teacher_weights
from destseg.train.checkpoint import load_run, load_trainer_state, read_config, save_checkpoint
from destseg.train.run_folder import claim_run_folder, warn_odd_image_sizes
from destseg.train.data import SampleRange, SyntheticAnomalyStream
from destseg.train.losses import cosine_distance_loss, mask_target, segmentation_loss
from destseg.train.model import SEG_HEAD, SEG_WIDTH, TOP_K, DeSTSeg

log = logging.getLogger("destseg.train")
PHASES = ("student", "segmentation")


@dataclass
class TrainOptions:
    data: str
    out: str
    category: Optional[str] = None
    backbone: str = "resnet18"
    seg_width: int = SEG_WIDTH
    seg_head: str = SEG_HEAD
    top_k: int = TOP_K
    teacher: str = "imagenet"
    teacher_weights: Optional[str] = None
    dtd: Optional[str] = None
    image_size: int = 256
    batch_size: int = 32
    steps_student: int = 1000
    steps_seg: int = 4000
    lr_student: float = 0.4
    lr_seg_res: float = 0.1
    lr_seg_head: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    bf16: bool = False
    resume: bool = False
    overwrite: bool = False  # start again in a folder that holds a run (replacing it)
    checkpoint_every: int = 500
    evaluate: bool = True


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def make_optimizer(model: DeSTSeg, phase: str, opts: TrainOptions) -> torch.optim.Optimizer:
    if phase == "student":
        groups = [{"params": model.student.parameters(), "lr": opts.lr_student}]
    else:
        seg = model.segmentation
        groups = [
            {"params": seg.res.parameters(), "lr": opts.lr_seg_res},
            {"params": list(seg.aspp.parameters()) + list(seg.head.parameters()), "lr": opts.lr_seg_head},
        ]
    return torch.optim.SGD(groups, momentum=opts.momentum, weight_decay=opts.weight_decay)


def student_step_loss(model: DeSTSeg, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The student sees the augmented image, the teacher the clean one."""
    with torch.no_grad():
        t_feats = model.teacher(batch["clean"])
    return cosine_distance_loss(model.student(batch["augmented"]), t_feats)  # float32 even under --bf16


def segmentation_step_loss(model: DeSTSeg, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Both frozen networks see the augmented image; only the segmentation network learns."""
    with torch.no_grad():
        t_feats = model.teacher(batch["augmented"])
        s_feats = model.student(batch["augmented"])
    logits = model.segment(t_feats, s_feats)
    return segmentation_loss(logits, mask_target(batch["mask"], logits.shape[-2:]))  # float32 even under --bf16


def set_phase_modes(model: DeSTSeg, phase: str) -> None:
    model.train()
    model.student.requires_grad_(phase == "student")
    model.segmentation.requires_grad_(phase == "segmentation")
    if phase == "segmentation":
        model.student.eval()  # frozen, BN statistics included


def _run_phase(
    model: DeSTSeg,
    phase: str,
    first_step: int,
    last_step: int,
    sample_offset: int,
    loss_fn: Callable[[DeSTSeg, Dict[str, torch.Tensor]], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    stream: SyntheticAnomalyStream,
    opts: TrainOptions,
    device: torch.device,
    save: Callable[[str, int, torch.optim.Optimizer], None],
) -> None:
    if first_step >= last_step:
        return
    bs = opts.batch_size
    loader = DataLoader(
        stream,
        batch_size=bs,
        sampler=SampleRange(sample_offset + first_step * bs, sample_offset + last_step * bs),
        num_workers=opts.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if opts.workers else None,
    )
    set_phase_modes(model, phase)
    bar = tqdm(total=last_step, initial=first_step, desc=f"step {PHASES.index(phase) + 1} {phase}", unit="it", dynamic_ncols=True)
    step, tic = first_step, time.perf_counter()
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        for key in ("clean", "augmented"):
            batch[key] = batch[key].contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.bf16):
            loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        toc = time.perf_counter()
        ips = bs / max(toc - tic, 1e-9)
        tic = toc
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{ips:.1f}")
        if step % 10 == 0 or step == last_step:
            log.info("%s step %d/%d loss %.5f images/s %.1f", phase, step, last_step, loss.item(), ips)
        if step % opts.checkpoint_every == 0 or step == last_step:
            save(phase, step, optimizer)
    bar.close()


def _setup_logging(run_dir: Path) -> logging.Handler:
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


@dataclass
class _Start:
    """Where a run starts: a fresh model, or the last checkpoint of the run being resumed."""

    model: DeSTSeg
    config: Dict[str, Any]
    progress: Dict[str, Any]  # {"phase", "step"} the weights hold
    optimizer_state: Optional[Dict[str, Any]] = None  # the resumed phase's optimiser, when it matches the weights


def _fresh_start(opts: TrainOptions, paths: List[Path]) -> _Start:
    model = DeSTSeg(opts.backbone, opts.seg_width, opts.top_k, opts.seg_head)
    config = {
        **model.architecture(),
        "teacher": load_teacher_weights(model.teacher, opts.backbone, opts.teacher, opts.teacher_weights),
        "image_size": opts.image_size,
        "category": opts.category,
        "data": str(Path(opts.data).resolve()),
        "train_images": len(paths),
        "options": {k: v for k, v in asdict(opts).items() if k not in ("resume", "overwrite", "out")},
        "destseg_edge_version": destseg.__version__,
    }
    return _Start(model, config, {"phase": "student", "step": 0})


def _resume(checkpoint: Path) -> _Start:
    """The run's last committed checkpoint; its optimiser state only when it is from the same step as the weights
    (always, for a generation; a run from before generations may have them apart)."""
    model, config = load_run(checkpoint, allow_unfinished=True)
    progress = config["progress"]
    state = load_trainer_state(checkpoint)
    if state is not None and state.get("progress") != progress:
        log.warning("optimiser state is from %s, weights from %s: restarting momentum", state.get("progress"), progress)
        state = None
    log.info("resuming %s at %s", checkpoint, progress)
    return _Start(model, config, progress, state)


class _Checkpoints:
    """Saves the run as it trains (weights, config, the phase's optimiser) with the progress they hold."""

    def __init__(self, run_dir: Path, start: _Start) -> None:
        self.run_dir, self.start = run_dir, start

    def save(self, phase: str, step: int, optimizer: torch.optim.Optimizer) -> None:
        s = self.start
        s.progress.update(phase=phase, step=step)
        save_checkpoint(self.run_dir, s.model, s.config, dict(s.progress), {"optimizer": optimizer.state_dict()})

    def finish(self, last_step: int) -> None:
        """The final weights, marked done; the optimiser state is no longer needed."""
        s = self.start
        s.progress.update(phase="done", step=last_step)
        save_checkpoint(self.run_dir, s.model, s.config, dict(s.progress))


def _run_schedule(start: _Start, stream: SyntheticAnomalyStream, opts: TrainOptions, device: torch.device,
                  checkpoints: _Checkpoints) -> None:
    """Step 1 then step 2, each from where ``start`` left it (a phase already done is skipped)."""
    schedule = [("student", opts.steps_student, student_step_loss, 0),
                ("segmentation", opts.steps_seg, segmentation_step_loss, opts.steps_student * opts.batch_size)]
    progress, state = start.progress, start.optimizer_state
    for phase, steps, loss_fn, offset in schedule:
        done = progress["phase"] == "done" or PHASES.index(progress["phase"]) > PHASES.index(phase)
        if done:
            continue
        first = progress["step"] if progress["phase"] == phase else 0
        optimizer = make_optimizer(start.model, phase, opts)
        if state is not None and progress["phase"] == phase:
            optimizer.load_state_dict(state["optimizer"])
        _run_phase(start.model, phase, first, steps, offset, loss_fn, optimizer, stream, opts, device, checkpoints.save)
        progress.update(phase=phase, step=steps)
        state = None


def _evaluate(run_dir: Path, opts: TrainOptions, device: torch.device) -> None:
    """Evaluate on the test split when there is one (and --no-eval was not given)."""
    if not (opts.evaluate and has_test_split(opts.data, opts.category)):
        return
    from destseg.train.evaluate import evaluate_run, format_table

    report = evaluate_run(run_dir, opts.data, opts.category, device=str(device))
    table = format_table([(opts.category, report["destseg"])], "DeSTSeg map (percent)")
    log.info("evaluation:\n%s", table)
    print(table)


def train(opts: TrainOptions) -> Path:
    """Train a run folder from scratch or, with ``resume``, from its last checkpoint."""
    if opts.batch_size < 2:
        raise ValueError("--batch-size must be at least 2 (batch norm in the segmentation network needs it)")
    run_dir = Path(opts.out)
    checkpoint = claim_run_folder(run_dir, opts)
    if checkpoint is not None and read_config(checkpoint)["progress"]["phase"] == "done":
        print(f"destseg-train: {run_dir} has already finished; nothing to resume (--overwrite trains it again)")
        return run_dir
    paths = good_images(opts.data, opts.category)
    warn_odd_image_sizes(paths, opts.image_size)
    device = resolve_device(opts.device)
    if opts.bf16 and device.type == "cpu" and not native_bf16():
        log.warning("--bf16 on a CPU without AMX/AVX512-BF16 is emulated and slower than FP32")
        warnings.warn("--bf16: this CPU has no native bfloat16 (AMX/AVX512-BF16); expect it to be slower than FP32", stacklevel=2)
    torch.manual_seed(opts.seed)
    handler = _setup_logging(run_dir)
    try:
        start = _resume(checkpoint) if checkpoint is not None else _fresh_start(opts, paths)
        start.model = start.model.to(device).to(memory_format=torch.channels_last)
        config = start.config
        stream = SyntheticAnomalyStream(
            paths, config["image_size"], config["mean"], config["std"], opts.seed, opts.category, opts.dtd
        )
        checkpoints = _Checkpoints(run_dir, start)
        _run_schedule(start, stream, opts, device, checkpoints)
        checkpoints.finish(opts.steps_seg)
        log.info("training finished: %s", run_dir)
        _evaluate(run_dir, opts, device)
        return run_dir
    finally:
        log.removeHandler(handler)
        handler.close()
