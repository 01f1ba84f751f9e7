"""The argument parser of ``fewshot`` / ``python -m fewshot`` (the commands themselves are in :mod:`fewshot.cli`)."""

from __future__ import annotations

import argparse

from . import __version__
from .cli_args import MAX_EPISODES, MAX_HIDDEN, MAX_STEPS, float_arg, int_arg
from .methods import METHODS
from .sine_cli import add_train_sine_parser

__all__ = ["build_parser"]


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
    t.add_argument("--inner-temperature", type=float_arg(0, above=True), default=None, metavar="T",
                   help="MAML/FOMAML: the inner loop's support loss is the cross-entropy of logits / T (default 1)")
    t.add_argument("--learn-inner-temperature", action="store_true",
                   help="MAML: meta-learn that temperature, starting at --inner-temperature (second order only)")
    t.add_argument("--inner-augment", type=int_arg(0, 64), default=None, metavar="K",
                   help="MAML/FOMAML: the inner loop also descends K randomly warped copies of each support image "
                        "(in training and at test time; default 0)")
    t.add_argument("--inner-params", choices=("all", "head"), default=None,
                   help="MAML/FOMAML: what the inner loop adapts: every weight (all, the default) or only the linear "
                        "head on the features of a fixed encoder (head: ANIL; the encoder runs once, not once per step)")
    t.add_argument("--multi-step-loss", type=float_arg(0, 1), default=None, metavar="FRACTION",
                   help="MAML/FOMAML: MAML++'s multi-step loss over the first FRACTION of the run (e.g. 0.3)")
    t.add_argument("--inner-grad-clip", type=float_arg(0), default=None, metavar="NORM",
                   help="MAML/FOMAML: scale each inner step's gradient down to this norm where longer (0: off)")
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
    t.add_argument("--freeze-backbone", action="store_true",
                   help="keep the --init-backbone encoder fixed (weights and BatchNorm statistics): only the method's "
                        "own layers learn (matching, siamese, mann, finetune)")
    t.add_argument("--max-seconds", type=float_arg(0, above=True), default=None,
                   help="stop (and save) after this much training time")
    t.add_argument("--augment", action="store_true",
                   help="warp every training image by a small random affine (rotation, scale, shear, shift; "
                        "seeded; never in validation or evaluation)")
    t.add_argument("--alphabet-groups", type=_positive, default=None, metavar="M",
                   help="omniglot: draw each episode's classes in blocks of up to M characters of one alphabet "
                        "(harder episodes of look-alike characters, as in Lake et al.'s within-alphabet task)")
    t.add_argument("--mix-shots", type=_positive, nargs="+", default=None, metavar="K",
                   help="each training episode's shot drawn uniformly from these (e.g. 1 5: one model, its inner "
                        "loop or metric learned for both); validation keeps --n-shot")
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
    e.add_argument("--inner-grad-clip", type=float_arg(0), default=None, metavar="NORM",
                   help="MAML: inner gradient norm limit at test time (0: off)")
    e.add_argument("--inner-temperature", type=float_arg(0, above=True), default=None, metavar="T",
                   help="MAML: the inner loop's support loss is the cross-entropy of logits / T at test time "
                        "(in place of the checkpoint's, learned or fixed)")
    e.add_argument("--inner-augment", type=int_arg(0, 64), default=None, metavar="K",
                   help="MAML: K warped copies of each support image in the inner loop at test time (0: none)")
    e.add_argument("--inner-params", choices=("all", "head"), default=None,
                   help="MAML: what the inner loop adapts at test time: every weight (all) or only the head (head)")
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

    u = sub.add_parser("soup", help="average the weights of several runs fine-tuned from one model (a uniform model "
                                    "soup: one model, often better than each)")
    u.add_argument("--checkpoints", nargs="+", required=True, metavar="CHECKPOINT",
                   help="two or more checkpoints of one method, architecture and input")
    u.add_argument("--out", required=True)

    add_train_sine_parser(sub)

    d = sub.add_parser("download", help="download the official Omniglot zips (needs internet)")
    d.add_argument("--data-dir", default=None)
    return parser
