"""``fewshot train-sine``: make the sine-wave checkpoints (MAML, or the baseline pre-trained on all sines).

Errors are raised as ``ValueError`` with one clear message; :func:`fewshot.cli.main` prints them as one
``error:`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .checkpoints import command_line, save_checkpoint
from .mlp import MLPRegressor
from .sine import AMPLITUDE_RANGE, PHASE_RANGE, X_RANGE
from .sine_training import SINE_MODES, SineTrainConfig, train_sine

__all__ = ["add_train_sine_parser", "cmd_train_sine", "reject_regressor"]


def _int_at_least(low: int):
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {value!r}") from None
        if n < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return n
    return parse


def _positive_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {value!r}") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return x


def add_train_sine_parser(sub: Any) -> None:
    """Add ``train-sine`` to the ``fewshot`` sub-command parsers."""
    s = sub.add_parser("train-sine", help="train the sine-wave regressor of the MAML paper (section 5.1): "
                                          "MAML, or the baseline pre-trained on all sines")
    s.add_argument("--model", choices=SINE_MODES, required=True,
                   help="maml: meta-train through the inner SGD step; pretrained: regress all sines jointly")
    s.add_argument("--out", required=True, help="checkpoint path (.safetensors)")
    s.add_argument("--iterations", type=_int_at_least(1), default=SineTrainConfig.iterations,
                   help="meta-iterations (the paper: 70000)")
    s.add_argument("--meta-batch-size", type=_int_at_least(1), default=SineTrainConfig.meta_batch_size)
    s.add_argument("--n-shot", type=_int_at_least(1), default=SineTrainConfig.n_shot, help="K points per sine")
    s.add_argument("--inner-lr", type=_positive_float, default=SineTrainConfig.inner_lr)
    s.add_argument("--inner-steps", type=_int_at_least(1), default=SineTrainConfig.inner_steps)
    s.add_argument("--meta-lr", type=_positive_float, default=SineTrainConfig.meta_lr, help="Adam learning rate")
    s.add_argument("--hidden", type=_int_at_least(1), nargs="+", default=[40, 40], help="hidden layer widths")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--log-every", type=_int_at_least(1), default=SineTrainConfig.log_every)
    s.add_argument("--max-seconds", type=_positive_float, default=None, help="stop (and save) after this long")
    s.add_argument("--quiet", action="store_true", help="no progress lines")


def cmd_train_sine(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file path such as {out / (args.model + '.safetensors')}")
    config = SineTrainConfig(mode=args.model, iterations=args.iterations, meta_batch_size=args.meta_batch_size,
                             n_shot=args.n_shot, inner_lr=args.inner_lr, inner_steps=args.inner_steps,
                             meta_lr=args.meta_lr, seed=args.seed, log_every=args.log_every)
    model = MLPRegressor(args.hidden)

    def on_log(record: dict) -> None:
        if not args.quiet:
            print(f"step {record['step']}: train loss {record['loss']:.4f}, {record['val_steps']}-step MSE "
                  f"{record['val_mse']:.4f} on 200 validation sines ({record['seconds']:.0f} s)", file=sys.stderr)

    result = train_sine(model, config, max_seconds=args.max_seconds, on_log=on_log)
    metadata = {
        "command": command_line(), "task": "sine",
        "sine": {"amplitude_range": list(AMPLITUDE_RANGE), "phase_range": list(PHASE_RANGE), "x_range": list(X_RANGE)},
        "n_shot": args.n_shot, "inner_lr_test": args.inner_lr, "train_config": asdict(config),
        "history": result.history, "steps_done": result.steps, "seconds": round(result.seconds, 1),
        "val_mse": result.history[-1]["val_mse"] if result.history else None,
    }
    try:
        save_checkpoint(out, model, method=f"sine_{args.model}", metadata=metadata)
    except OSError as exc:
        raise ValueError(f"cannot write {out}: {exc.strerror or exc}") from exc
    msg = f"saved {out} after {result.steps} iterations ({result.seconds:.0f} s)"
    if result.stopped_early:
        msg += f"; stopped by --max-seconds before iteration {args.iterations}"
    print(msg, file=sys.stderr)
    return 0


def reject_regressor(model: Any, checkpoint: str | Path) -> None:
    """Raise a clear ``ValueError`` when an image command is given a sine-wave checkpoint."""
    if isinstance(model, MLPRegressor):
        raise ValueError(f"{checkpoint} is a sine-wave regressor (fewshot train-sine), not an image classifier; "
                         "score it with benchmarks/sine.py or try it on the app's sine page")
