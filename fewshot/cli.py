"""``fewshot`` / ``python -m fewshot``: train, evaluate, predict, info, download.

User errors (bad paths, impossible task shapes, broken files) print one ``error:`` line and exit
with status 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from . import __version__
from .augment import AffineAugment
from .checkpoints import CheckpointError, command_line, load_checkpoint, save_checkpoint
from .cli_args import (MAX_EPISODES, MAX_HIDDEN, MAX_STEPS, check_arguments, check_out_path, dumps_json, float_arg,
                       int_arg, one_line, skipped_summary)
from .config import TaskConfig, TrainConfig
from .datasets import FolderDataset, TensorDataset, list_image_files
from .distributed import World, init_from_env, shutdown
from .methods import METHODS, FewShotClassifier, build_model
from .omniglot import DataNotFoundError, download_omniglot, load_omniglot
from .sine_cli import add_train_sine_parser, cmd_train_sine, reject_regressor
from .pretrain import VAL_WAY, pretrain_encoder, steps_for_epochs
from .taskfile import read_task, support_dataset
from .tasks import AlphabetTaskSampler, TaskSampler
from .training import EvalResult, NonFiniteLossError, StepLog, TrainState, evaluate, resolve_device, train, use_fast_layout
from .transforms import ImageError, preprocess_image

__all__ = ["main", "build_parser"]


class UserError(Exception):
    """Reported as one line on stderr, exit status 2."""


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    if n > 10**9:
        raise argparse.ArgumentTypeError(f"must be at most 1000000000, got {value}")
    return n


def _way(value: str) -> int:
    n = int(value)
    if n < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (a 1-way task has only one possible answer), got {value}")
    if n > 10_000:
        raise argparse.ArgumentTypeError(f"must be at most 10000 classes, got {value}")
    return n


def _non_negative(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    if n > 10**9:
        raise argparse.ArgumentTypeError(f"must be at most 1000000000, got {value}")
    return n


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=("omniglot", "folder"), default="omniglot")
    p.add_argument("--protocol", choices=("vinyals", "lake"), default="vinyals",
                   help="omniglot split protocol (ignored for --dataset folder)")
    p.add_argument("--data-dir", help="omniglot: folder with images_background.zip/images_evaluation.zip "
                   "(default $FEWSHOT_DATA_DIR, then the cache folder); folder: a folder of class subfolders")
    p.add_argument("--n-way", type=_way, default=5)
    p.add_argument("--n-shot", type=_positive, default=1)
    p.add_argument("--n-query", type=_positive, default=15)
    p.add_argument("--episodes", type=int_arg(0, MAX_EPISODES), default=1000)
    p.add_argument("--seed", type=int_arg(-(2**63), 2**64 - 1), default=0)
    p.add_argument("--device", default="auto", help="auto (GPU if available), cpu or cuda")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fewshot", description="Few-shot learning on Omniglot or your own images.")
    parser.add_argument("--version", action="version", version=f"fewshot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="meta-train (or pre-train) a model and write a checkpoint")
    t.add_argument("--method", choices=tuple(METHODS), required=True)
    _add_data_args(t)
    t.add_argument("--out", required=True, help="checkpoint path (.safetensors)")
    t.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    t.add_argument("--meta-batch-size", type=int_arg(1, 10_000), default=1)
    t.add_argument("--meta-lr", type=float, default=1e-3)
    t.add_argument("--lr-schedule", choices=("constant", "cosine", "step"), default="constant")
    t.add_argument("--grad-clip", type=float_arg(0, above=True), default=None)
    t.add_argument("--train-split", choices=("train", "trainval"), default="train")
    t.add_argument("--image-size", type=_positive, default=28)
    t.add_argument("--hidden", type=int_arg(1, MAX_HIDDEN), default=64, help="Conv-4 filters per layer")
    t.add_argument("--no-rotations", action="store_true", help="lake protocol: no x4 rotation classes")
    t.add_argument("--inner-steps", type=int_arg(0, MAX_STEPS), default=None,
                   help="MAML inner steps in training (default 1)")
    t.add_argument("--inner-lr", type=float_arg(0), default=None, help="MAML inner learning rate (default 0.4)")
    t.add_argument("--inner-steps-test", type=int_arg(0, MAX_STEPS), default=None)
    t.add_argument("--inner-lr-test", type=float_arg(0), default=None)
    t.add_argument("--batch-norm", choices=("transductive", "support", "running"), default=None,
                   help="MAML BatchNorm mode (running: the fixed statistics of the --init-backbone encoder)")
    t.add_argument("--proto-head", action="store_true",
                   help="MAML/FOMAML: Proto-MAML, each task's head built from its support prototypes (any N-way)")
    t.add_argument("--learn-inner-lr", action="store_true",
                   help="MAML/FOMAML: MAML++'s learned inner learning rate per layer and per step")
    t.add_argument("--multi-step-loss", type=float_arg(0, 1), default=None, metavar="FRACTION",
                   help="MAML/FOMAML: MAML++'s multi-step loss over the first FRACTION of the run (e.g. 0.3)")
    t.add_argument("--checkpoint-inner", action="store_true",
                   help="MAML: recompute each inner step in the backward pass (memory flat in the number of steps)")
    t.add_argument("--distance", choices=("euclidean", "cosine"), default=None, help="ProtoNet distance")
    t.add_argument("--fce", action="store_true", help="Matching Networks: full-context embeddings")
    t.add_argument("--cosine-scale", type=float_arg(0), default=10.0,
                   help="Matching Networks: initial value of the learned scale on cosine similarities "
                        "(0: the paper's unscaled cosines)")
    t.add_argument("--aggregate", choices=("max", "mean"), default=None, help="Siamese: per-class score")
    t.add_argument("--finetune-steps", type=int_arg(0, MAX_STEPS), default=None)
    t.add_argument("--finetune-backbone", action="store_true")
    t.add_argument("--val-every", type=_non_negative, default=500, help="validate every N steps (0: never)")
    t.add_argument("--val-episodes", type=_positive, default=200)
    t.add_argument("--checkpoint-every", type=_positive, default=500)
    t.add_argument("--init-backbone", default=None, metavar="CHECKPOINT",
                   help="start from the backbone weights of another checkpoint (recorded in the metadata)")
    batching = t.add_mutually_exclusive_group()
    batching.add_argument("--batch-tasks", action="store_true",
                          help="MAML/MANN: one batched pass over a meta-batch's tasks (the default on a GPU only; "
                               "same gradients)")
    batching.add_argument("--no-batch-tasks", action="store_true",
                          help="loop over the tasks of a meta-batch (the default on a CPU: as fast, less memory)")
    t.add_argument("--max-seconds", type=float_arg(0, above=True), default=None,
                   help="stop (and save) after this much training time")
    t.add_argument("--augment", action="store_true",
                   help="warp every training image by a small random affine (rotation, scale, shear, shift; "
                        "seeded; never in validation or evaluation)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    r = sub.add_parser("pretrain", help="pre-train a shared Conv-4 encoder as a classifier over all training classes "
                                        "(for --init-backbone)")
    r.add_argument("--protocol", choices=("vinyals", "lake"), default="lake")
    r.add_argument("--data-dir", help="folder with images_background.zip/images_evaluation.zip")
    r.add_argument("--train-split", choices=("train", "trainval"), default="train",
                   help="train: validated on the val split; trainval: every training class, no validation")
    r.add_argument("--out", required=True, help="checkpoint path (.safetensors)")
    r.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    r.add_argument("--epochs", type=float, default=40.0, help="passes over the training images (the schedule's length)")
    r.add_argument("--batch-size", type=_positive, default=128)
    r.add_argument("--lr", type=float_arg(0, 1e30, above=True), default=1e-3, help="Adam learning rate")
    r.add_argument("--lr-schedule", choices=("constant", "cosine", "step"), default="cosine")
    r.add_argument("--weight-decay", type=float_arg(0), default=0.0)
    r.add_argument("--augment", action="store_true", help="random affine warp of every training image (seeded)")
    r.add_argument("--image-size", type=_positive, default=28)
    r.add_argument("--hidden", type=_positive, default=64, help="Conv-4 filters per layer")
    r.add_argument("--no-rotations", action="store_true", help="lake protocol: no x4 rotation classes")
    r.add_argument("--val-every", type=_non_negative, default=500, help="validate every N steps (0: never)")
    r.add_argument("--val-episodes", type=_positive, default=200)
    r.add_argument("--checkpoint-every", type=_positive, default=500)
    r.add_argument("--max-seconds", type=float_arg(0, above=True), default=None,
                   help="stop (and save) after this much training time")
    r.add_argument("--seed", type=int_arg(-(2**63), 2**64 - 1), default=0)
    r.add_argument("--device", default="auto", help="auto (GPU if available), cpu or cuda")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="accuracy ± 95%% CI on the test split of a protocol (or a folder)")
    e.add_argument("--checkpoint", required=True)
    _add_data_args(e)
    e.add_argument("--split", choices=("test", "val", "train", "trainval"), default="test")
    e.add_argument("--inner-steps", type=int_arg(0, MAX_STEPS), default=None, help="MAML: inner steps at test time")
    e.add_argument("--inner-lr", type=float_arg(0), default=None, help="MAML: inner learning rate at test time")
    e.add_argument("--batch-norm", choices=("transductive", "support", "running"), default=None)
    e.add_argument("--json", action="store_true")
    e.add_argument("--within-alphabet", action="store_true",
                   help="Lake et al.'s one-shot task (--protocol lake): each episode's characters from one alphabet, "
                        "support and query drawn by different people (use --n-shot 1 --n-query 1 for the paper's)")
    e.add_argument("--alphabet", default=None, help="with --within-alphabet: draw every episode from this alphabet")
    e.set_defaults(episodes=1000)

    p = sub.add_parser("predict", help="classify query images given a folder of labelled support images")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--support", required=True, help="folder of class subfolders, or a task file / zip of class "
                   "subfolders (.zip; a task file's support images)")
    p.add_argument("--query", required=True, nargs="+", help="image files or folders of images")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")

    i = sub.add_parser("info", help="show a checkpoint's metadata")
    i.add_argument("--checkpoint", required=True)
    i.add_argument("--json", action="store_true")

    x = sub.add_parser("export", help="write a checkpoint without its resumable training state (small, for shipping)")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--out", required=True)

    add_train_sine_parser(sub)

    d = sub.add_parser("download", help="download the official Omniglot zips (needs internet)")
    d.add_argument("--data-dir", default=None)
    return parser


def _load_dataset(args: argparse.Namespace, split: str, *, image_size: int, rotations: bool | None,
                  center: bool = True) -> TensorDataset:
    if args.dataset == "folder":
        if not args.data_dir:
            raise UserError("--dataset folder needs --data-dir pointing at a folder of class subfolders")
        return FolderDataset(args.data_dir, image_size, center=center)
    return load_omniglot(args.protocol, split, data_dir=args.data_dir, image_size=image_size, rotations=rotations)


def _method_kwargs(args: argparse.Namespace, train_set: TensorDataset) -> dict[str, Any]:
    kw: dict[str, Any] = {"hidden": args.hidden}
    m = args.method
    if m in ("maml", "fomaml"):
        kw["n_way"] = args.n_way
        for name in ("inner_steps", "inner_lr", "inner_steps_test", "inner_lr_test", "batch_norm", "multi_step_loss"):
            if getattr(args, name) is not None:
                kw[name] = getattr(args, name)
        for flag in ("proto_head", "learn_inner_lr"):
            if getattr(args, flag):
                kw[flag] = True
        if args.checkpoint_inner:
            kw["checkpoint_inner"] = True
    elif m == "mann":
        kw["n_way"] = args.n_way
    elif m == "protonet" and args.distance:
        kw["distance"] = args.distance
    elif m == "matching":
        kw["fce"] = args.fce
        kw["scale_init"] = args.cosine_scale if args.cosine_scale > 0 else None
    elif m == "siamese" and args.aggregate:
        kw["aggregate"] = args.aggregate
    elif m == "finetune":
        kw["n_classes"] = len(train_set.class_names)
        kw["finetune_backbone"] = args.finetune_backbone
        if args.finetune_steps is not None:
            kw["finetune_steps"] = args.finetune_steps
    kw["feature_dim"] = args.hidden * (args.image_size // 16) ** 2
    if m == "protonet":
        kw.pop("feature_dim")
    return kw


def _copy_backbone(source: FewShotClassifier, target: FewShotClassifier) -> None:
    """Copy the Conv-4 weights (not BatchNorm running statistics the target may not keep)."""
    wanted = dict(target.backbone.named_parameters())
    given = dict(source.backbone.named_parameters())
    if set(wanted) != set(given) or any(wanted[k].shape != given[k].shape for k in wanted):
        def describe(params: dict[str, torch.Tensor]) -> str:
            first = next(iter(params.values()), None)  # Conv-4's first convolution: (filters, channels, 3, 3)
            if first is None or first.ndim != 4 or len(params) != len(wanted):
                return f"another architecture ({len(params)} parameter tensors)"
            return f"Conv-4, {first.shape[0]} filters, {first.shape[1]} input channel(s)"
        raise UserError(f"--init-backbone: that checkpoint's backbone ({describe(given)}) does not fit this model's "
                        f"({describe(wanted)}); use an encoder trained with the same --hidden and image channels")
    with torch.no_grad():
        for name, param in wanted.items():
            param.copy_(given[name])
        target_buffers = dict(target.backbone.named_buffers())
        for name, buf in source.backbone.named_buffers():
            if name in target_buffers and target_buffers[name].shape == buf.shape:
                target_buffers[name].copy_(buf)


def _check_shape(model: FewShotClassifier, n_way: int, what: str) -> None:
    fixed = getattr(model, "n_way", None)
    if fixed is not None and n_way > fixed:
        raise UserError(f"this {what} model has a {fixed}-way output head and cannot answer {n_way}-way tasks; "
                        f"use --n-way {fixed} or less, or train a {n_way}-way model")


def _progress(args: argparse.Namespace, total: int, initial: int):
    if args.quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    world = init_from_env(args.device)  # None unless started by torchrun as one of several processes
    try:
        return _train(args, world)
    finally:
        shutdown(world)


def _train(args: argparse.Namespace, world: World | None) -> int:
    if args.episodes == 0 and not args.init_backbone and not args.resume:
        raise UserError("--episodes 0 would write an untrained model; give --episodes 1 or more (or --init-backbone "
                        "CHECKPOINT to keep a pre-trained encoder without training)")
    out = check_out_path(args.out, resume=args.resume)  # now, not after the run: no training is lost to a bad path
    device = resolve_device(args.device) if world is None else world.device
    rotations = False if args.no_rotations else None
    train_set = _load_dataset(args, args.train_split, image_size=args.image_size, rotations=rotations)
    if skipped_summary(train_set) and (world is None or world.is_main):
        print(skipped_summary(train_set), file=sys.stderr)
    val_set = None
    if args.val_every and args.dataset == "omniglot" and args.train_split == "train":
        val_set = load_omniglot(args.protocol, "val", data_dir=args.data_dir, image_size=args.image_size,
                                rotations=rotations)
    task = TaskConfig(args.n_way, args.n_shot, args.n_query)
    config = TrainConfig(episodes=args.episodes, meta_batch_size=args.meta_batch_size, meta_lr=args.meta_lr,
                         lr_schedule=args.lr_schedule, grad_clip=args.grad_clip, eval_every=args.val_every,
                         eval_tasks=args.val_episodes, checkpoint_every=args.checkpoint_every, seed=args.seed,
                         batch_tasks=False if args.no_batch_tasks else True if args.batch_tasks else None)
    state: TrainState | None = None
    if args.resume:
        if not out.exists():
            raise UserError(f"--resume: {out} does not exist; run without --resume to start a new run")
        model, info = load_checkpoint(out, device, expect_method=args.method)
        if info.train_state is None:
            raise UserError(f"--resume: {out} holds no training state (it is a final export); start a new run")
        state = info.train_state
        if bool(info.metadata.get("augment")) != args.augment:
            raise UserError(f"--resume: {out} was trained {'with' if info.metadata.get('augment') else 'without'} "
                            "--augment; resume it with the same setting, or start a new run")
        metadata = dict(info.metadata)
        metadata.setdefault("resumed_with", []).append(command_line())
    else:
        torch.manual_seed(args.seed)  # --seed fixes the initial weights too: the same command gives the same run
        model = build_model(args.method, **_method_kwargs(args, train_set)).to(device)
        metadata = {"command": command_line()}
        if args.init_backbone:
            source, source_info = load_checkpoint(args.init_backbone, device)
            _copy_backbone(source, model)
            metadata["init_backbone"] = {"checkpoint": str(args.init_backbone), "method": source_info["method"],
                                         "command": source_info.get("command")}
    metadata.update({
        "protocol": args.protocol if args.dataset == "omniglot" else None, "dataset": args.dataset,
        "data_dir": str(args.data_dir) if args.dataset == "folder" else None,
        "train_split": args.train_split, "rotations": args.dataset == "omniglot" and not args.no_rotations,
        "image_size": args.image_size, "in_channels": 1, "preprocess": {"center": args.dataset == "folder"},
        "n_way": args.n_way, "n_shot": args.n_shot, "n_query": args.n_query,
        "task_config": asdict(task), "train_config": asdict(config),
        "augment": AffineAugment().to_dict() if args.augment else None,
        **({"world_size": world.world_size, "backend": world.backend} if world is not None else {}),
        "class_names": train_set.class_names if args.dataset == "folder" else None,
    })
    if world is None:  # a run resumed in one process is no longer the torchrun run it continues
        for key in ("world_size", "backend"):
            metadata.pop(key, None)
    _check_shape(model, args.n_way, args.method)
    # Tasks are assembled where the model lives: on a GPU the images stay on the GPU.
    train_set.to(device)
    sampler = TaskSampler(train_set, args.n_way, args.n_shot, args.n_query, seed=args.seed,
                          augment=AffineAugment() if args.augment else None)
    validate = None
    if val_set is not None:
        val_set.to(device)
        val_way = min(args.n_way, len(val_set.class_names))

        def validate(m: FewShotClassifier) -> EvalResult:
            s = TaskSampler(val_set, val_way, args.n_shot, args.n_query, seed=12345)  # same val tasks every time
            return evaluate(m, (s.sample_task() for _ in range(args.val_episodes)))

    main_process = world is None or world.is_main  # under torchrun only rank 0 prints
    bar = _progress(args, args.episodes, state.step if state else 0) if main_process else None
    last_val: list[str] = []

    def on_step(log: StepLog) -> None:
        if log.val_accuracy is not None:
            last_val[:] = [f"{100 * log.val_accuracy:.2f}±{100 * log.val_ci95:.2f}"]
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{log.loss:.3f}", acc=f"{log.accuracy:.3f}", **({"val": last_val[0]} if last_val else {}))

    def on_checkpoint(ts: TrainState) -> None:
        vals = [h for h in ts.history if "val_accuracy" in h]
        if vals:
            metadata["val_accuracy"], metadata["val_ci95"] = vals[-1]["val_accuracy"], vals[-1]["val_ci95"]
        metadata["steps_done"] = ts.step
        save_checkpoint(out, model, method=args.method, metadata=metadata, train_state=ts)

    try:
        result = train(model, sampler, config, on_step=on_step, validate=validate, on_checkpoint=on_checkpoint,
                       state=state, max_seconds=args.max_seconds, world=world)
    finally:
        if bar is not None:
            bar.close()
    msg = f"saved {out} after {result.steps} steps ({result.seconds:.0f} s)"
    if result.stopped_early:
        msg += f"; stopped by --max-seconds before step {args.episodes} (run again with --resume to continue)"
    if "val_accuracy" in metadata:
        msg += f"; validation accuracy {100 * metadata['val_accuracy']:.2f}% ± {100 * metadata['val_ci95']:.2f}"
    if main_process:
        print(msg, file=sys.stderr)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    check_out_path(args.out, resume=args.resume)  # now, not after the run: no training is lost to a bad path
    rotations = False if args.no_rotations else None
    load = dict(data_dir=args.data_dir, image_size=args.image_size, rotations=rotations)
    train_set = load_omniglot(args.protocol, args.train_split, **load)
    val_set = load_omniglot(args.protocol, "val", **load) if args.val_every and args.train_split == "train" else None
    metadata = {"command": command_line(), "protocol": args.protocol, "dataset": "omniglot",
                "train_split": args.train_split, "rotations": not args.no_rotations, "image_size": args.image_size,
                "in_channels": 1, "preprocess": {"center": False}, "role": "encoder"}
    steps = steps_for_epochs(args.epochs, len(train_set), args.batch_size)
    bar = _progress(args, steps, 0)
    on_step = None
    if bar is not None:
        def on_step(log: StepLog) -> None:
            if bar.n == 0 and log.step > 1:
                bar.update(log.step - 1)  # a resumed run
            bar.update(1)
            bar.set_postfix(loss=f"{log.loss:.3f}", batch_acc=f"{log.accuracy:.3f}")
    try:
        result, meta = pretrain_encoder(
            train_set, args.out, batch_size=args.batch_size, epochs=args.epochs, lr=args.lr,
            lr_schedule=args.lr_schedule, weight_decay=args.weight_decay, hidden=args.hidden,
            augment=AffineAugment() if args.augment else None, seed=args.seed, val_set=val_set,
            val_every=args.val_every, val_episodes=args.val_episodes, checkpoint_every=args.checkpoint_every,
            max_seconds=args.max_seconds, resume=args.resume, device=device, metadata=metadata, on_step=on_step)
    finally:
        if bar is not None:
            bar.close()
    msg = (f"saved {args.out} after {result.steps} steps, {meta['epochs_done']} epochs over "
           f"{len(train_set.class_names)} classes ({meta['train_seconds']:.0f} s, {meta['cpu_seconds']:.0f} CPU-seconds "
           "in all)")
    if result.stopped_early:
        msg += f"; stopped by --max-seconds before step {steps} (run again with --resume to continue)"
    if "val_accuracy" in meta:
        msg += (f"; ProtoNet on this encoder, {VAL_WAY}-way 1-shot validation: {100 * meta['val_accuracy']:.2f}% "
                f"± {100 * meta['val_ci95']:.2f}")
    print(msg + f"; start a model from it with `fewshot train ... --init-backbone {args.out}`", file=sys.stderr)
    return 0


def _configure_for_eval(model: FewShotClassifier, args: argparse.Namespace) -> None:
    if getattr(args, "inner_steps", None) is not None:
        if not hasattr(model, "inner_steps_test"):
            raise UserError("--inner-steps applies to maml/fomaml checkpoints only")
        model.inner_steps_test = args.inner_steps  # type: ignore[attr-defined]
    if getattr(args, "inner_lr", None) is not None:
        if not hasattr(model, "inner_lr_test"):
            raise UserError("--inner-lr applies to maml/fomaml checkpoints only")
        model.inner_lr_test = args.inner_lr  # type: ignore[attr-defined]
    if getattr(args, "batch_norm", None) is not None:
        if not hasattr(model, "batch_norm"):
            raise UserError("--batch-norm applies to maml/fomaml checkpoints only")
        if (args.batch_norm == "running") != (model.batch_norm == "running"):  # type: ignore[attr-defined]
            raise UserError(f"--batch-norm {args.batch_norm}: this checkpoint was trained with batch_norm "
                            f"{model.batch_norm!r}; running statistics are kept only by models trained with them")
        model.batch_norm = args.batch_norm  # type: ignore[attr-defined]


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise UserError("--episodes must be at least 1: an accuracy needs at least one episode")
    device = resolve_device(args.device)
    model, info = load_checkpoint(args.checkpoint, device)
    reject_regressor(model, args.checkpoint)
    use_fast_layout(model)  # on a CPU, channels_last, as train() runs it
    meta = info.metadata
    _configure_for_eval(model, args)
    _check_shape(model, args.n_way, meta["method"])
    image_size = int(meta.get("image_size", 28))
    center = bool(meta.get("preprocess", {}).get("center", True))
    dataset = _load_dataset(args, args.split, image_size=image_size, rotations=None, center=center).to(device)
    if skipped_summary(dataset):
        print(skipped_summary(dataset), file=sys.stderr)
    if args.within_alphabet:
        if args.dataset != "omniglot" or args.protocol != "lake":
            raise UserError("--within-alphabet is Lake et al.'s task on Omniglot's own alphabets; use it with "
                            "--dataset omniglot --protocol lake")
        sampler = AlphabetTaskSampler(dataset, args.n_way, args.n_shot, args.n_query, seed=args.seed,
                                      alphabet=args.alphabet)
    elif args.alphabet is not None:
        raise UserError("--alphabet applies to --within-alphabet evaluation only")
    else:
        sampler = TaskSampler(dataset, args.n_way, args.n_shot, args.n_query, seed=args.seed)
    result = evaluate(model, (sampler.sample_task() for _ in range(args.episodes)))
    report = {"accuracy": result.accuracy, "ci95": result.ci95, "episodes": result.episodes, "n_way": args.n_way,
              "n_shot": args.n_shot, "n_query": args.n_query, "method": meta["method"],
              "protocol": args.protocol if args.dataset == "omniglot" else None, "dataset": args.dataset,
              "split": args.split if args.dataset == "omniglot" else None, "seed": args.seed,
              "checkpoint": str(args.checkpoint), "trained_protocol": meta.get("protocol"),
              **({"within_alphabet": True, "alphabet": args.alphabet} if args.within_alphabet else {})}
    for name in ("inner_steps_test", "inner_lr_test", "batch_norm"):
        if hasattr(model, name):
            report[name] = getattr(model, name)
    if getattr(dataset, "skipped", None):
        report["skipped"] = list(dataset.skipped)
    if args.json:
        print(dumps_json(report))
    else:
        where = f"{args.protocol}/{args.split}" if args.dataset == "omniglot" else args.data_dir
        if args.within_alphabet:
            where += f", within {args.alphabet or 'one alphabet'}, support and query by different drawers"
        print(f"{meta['method']} on {where}: {args.n_way}-way {args.n_shot}-shot accuracy "
              f"{100 * result.accuracy:.2f}% ± {100 * result.ci95:.2f} (95% CI, {result.episodes} episodes)")
    return 0


def _query_files(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = list_image_files(path)
            if not found:
                raise UserError(f"query folder {path} contains no image files")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise UserError(f"query {path} does not exist")
    return files


def cmd_predict(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    model, info = load_checkpoint(args.checkpoint, device)
    reject_regressor(model, args.checkpoint)
    meta = info.metadata
    image_size = int(meta.get("image_size", 28))
    support = (support_dataset(read_task(args.support), image_size) if Path(args.support).is_file()
               else FolderDataset(args.support, image_size, center=True, check_ink=True))
    if len(support.class_names) < 2:
        raise UserError(f"--support {args.support} has {len(support.class_names)} class with images; "
                        "few-shot classification needs at least 2 class subfolders")
    _check_shape(model, len(support.class_names), meta["method"])
    queries = []
    files = _query_files(args.query)
    for f in files:
        try:
            queries.append(preprocess_image(f, image_size, center=True, check_ink=True))
        except ImageError as exc:
            raise UserError(str(exc)) from exc
    labels = torch.tensor(support.get_labels())
    model.eval()
    with torch.no_grad():
        model.process_support_set(support.get_images(torch.arange(len(support))).to(device), labels.to(device))
        probabilities = torch.softmax(model(torch.stack(queries).to(device)), dim=1).cpu()
    if not bool(torch.isfinite(probabilities).all()):
        raise UserError(f"{args.checkpoint} gives answers that are not numbers (NaN) for these images; its settings "
                        "make the model diverge (e.g. a MAML inner learning rate too large), so no prediction is shown")
    predictions = []
    for f, p in zip(files, probabilities):
        predictions.append({"query": str(f), "label": support.class_names[int(p.argmax())],
                            "probabilities": {c: round(float(v), 6) for c, v in zip(support.class_names, p)}})
    if args.json:
        print(dumps_json({"predictions": predictions, "method": meta["method"], "skipped": support.skipped}))
    else:
        for skipped in support.skipped:
            print(f"skipped {skipped}", file=sys.stderr)
        for pred in predictions:
            print(f"{pred['query']}: {pred['label']} ({100 * pred['probabilities'][pred['label']]:.1f}%)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .checkpoints import read_checkpoint_info

    meta = read_checkpoint_info(args.checkpoint)
    public = {k: v for k, v in meta.items() if k not in ("train_state",)}
    public.setdefault("n_way", public.get("method_kwargs", {}).get("n_way"))
    if args.json:
        print(dumps_json(public))
    else:
        for key in ("method", "protocol", "dataset", "n_way", "n_shot", "n_query", "image_size", "steps_done",
                    "val_accuracy", "command", "saved_at"):
            if key in public:
                print(f"{key}: {public[key]}")
        print(f"method_kwargs: {json.dumps(public.get('method_kwargs', {}))}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    check_out_path(args.out)
    model, info = load_checkpoint(args.checkpoint)
    metadata = {k: v for k, v in info.metadata.items() if k not in ("train_state", "format", "format_version",
                                                                     "method", "method_kwargs", "saved_at")}
    metadata["exported_from"] = {"steps_done": info.metadata.get("steps_done"), "saved_at": info.metadata.get("saved_at")}
    save_checkpoint(args.out, model, method=info.metadata["method"], metadata=metadata)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    folder = download_omniglot(args.data_dir)
    print(f"Omniglot is in {folder}; use --data-dir {folder} or set FEWSHOT_DATA_DIR={folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"train": cmd_train, "pretrain": cmd_pretrain, "evaluate": cmd_evaluate, "predict": cmd_predict, "info": cmd_info,
                "export": cmd_export, "download": cmd_download, "train-sine": cmd_train_sine}
    try:
        check_arguments(args)  # the device and image size, for every subcommand, before any work
        return handlers[args.command](args)
    except (UserError, CheckpointError, DataNotFoundError, ImageError, NonFiniteLossError, ValueError) as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint written is intact (use --resume to continue)", file=sys.stderr)
        return 130
