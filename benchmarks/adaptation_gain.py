"""Does MAML's adaptation add? Proto-MAML after its inner steps against the same model at 0 steps, on the same episodes.

At 0 inner steps Proto-MAML is exactly ProtoNet on its own encoder (``tests/test_protomaml.py``), so this is issue
16's "MAML-family >= ProtoNet on the same encoder", cell by cell. Both answers come from one pass over the same
episodes (seed 0, 5 queries per class), so the difference is paired: its 95% CI is that of the per-episode
differences.

    python benchmarks/adaptation_gain.py --data-dir DIR [--episodes 1000] [--protocol lake|vinyals]
                                         [--checkpoints A.safetensors ...]
                                         [--inner-grad-clip NORM] [--inner-lr LR] [--inner-steps S]
                                         [--inner-temperature T] [--inner-augment K]
                                         [--inner-params all|head] [--settings 20w1s ...] [--out FILE]

``--inner-lr`` and ``--inner-steps`` replace the checkpoints' own test-time inner loop (a fixed rate for every
layer, in place of learned ones), to ask what larger steps would do. Each row also gives the support set's mean
cross-entropy under the prototype head before any step (``support_loss_0``): the gradient the inner loop follows
comes from it, so where it is near 0 the steps can change little. A model with an inner-loss temperature
(``train --inner-temperature``) follows the cross-entropy of its logits over that temperature instead
(``inner_loss_0``). ``--inner-temperature`` and ``--inner-augment`` (K warped copies of each support image in the
inner loop, ``train --inner-augment``) and ``--inner-params`` (``head``: only the linear head adapts, ``train
--inner-params``) replace the checkpoints' own, as ``fewshot evaluate``'s options do.

Writes ``benchmarks/results/adaptation_gain.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fewshot import TaskSampler, load_checkpoint, load_omniglot  # noqa: E402

SETTINGS = ((5, 1), (5, 5), (20, 1), (20, 5))
DEFAULT = ["checkpoints/lake/protomaml.safetensors", "checkpoints/lake/foprotomaml.safetensors"]


def _accuracy(model, task) -> float:
    model.process_support_set(task.support_images, task.support_labels)
    return (model(task.query_images).argmax(1) == task.query_labels).float().mean().item()


def compare(path: str, dataset, episodes: int, clip: float | None = None, lr: float | None = None,
            steps: int | None = None, temperature: float | None = None, augment: int | None = None,
            protocol: str = "lake", params: str | None = None,
            settings: tuple[tuple[int, int], ...] = SETTINGS) -> list[dict]:
    model, info = load_checkpoint(ROOT / path)
    model.eval()
    model.set_test_inner_loop(steps=steps, lr=lr, temperature=temperature, augment=augment, params=params,
                              grad_clip=clip)  # what `fewshot evaluate`'s options replace
    steps = model.inner_steps_test
    rows = []
    for way, shot in settings:
        sampler = TaskSampler(dataset, way, shot, 5, seed=0)
        zero, adapted, support_loss, inner_loss = [], [], [], []
        loss_fn = model.inner_loss_fn() or torch.nn.functional.cross_entropy
        with torch.no_grad():
            for _ in range(episodes):
                task = sampler.sample_task()
                model.inner_steps_test = 0
                zero.append(_accuracy(model, task))
                support_logits = model(task.support_images)
                support_loss.append(torch.nn.functional.cross_entropy(support_logits, task.support_labels).item())
                inner_loss.append(loss_fn(support_logits, task.support_labels).item())
                model.inner_steps_test = steps
                adapted.append(_accuracy(model, task))
        diff = torch.tensor(adapted) - torch.tensor(zero)
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        rows.append({"checkpoint": path, "protocol": protocol, "n_way": way, "n_shot": shot, "episodes": episodes, "inner_steps": steps,
                     "inner_grad_clip": getattr(model, "inner_grad_clip", 0.0),
                     "inner_lr": "learned" if model.log_inner_lr is not None else model.inner_lr_test,
                     "inner_temperature": model.inner_temperature_value(),
                     "inner_augment": getattr(model, "inner_augment", 0),
                     **({"inner_params": model.inner_params} if getattr(model, "inner_params", "all") != "all" else {}),
                     "support_loss_0": mean(support_loss), "inner_loss_0": mean(inner_loss),
                     "accuracy_0_steps": mean(zero), "accuracy_adapted": mean(adapted),
                     "gain": diff.mean().item(), "gain_ci95": 1.96 * diff.std().item() / math.sqrt(episodes),
                     "episodes_worse": int((diff < 0).sum()), "episodes_better": int((diff > 0).sum()),
                     "worst_episode_change": diff.min().item()})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def cell(text: str) -> tuple[int, int]:
    """``"20w1s"`` -> ``(20, 1)``: the argparse type of a ``--settings`` cell (campaign_curve.py uses it too)."""
    try:
        way, shot = text.lower().rstrip("s").split("w")
        return int(way), int(shot)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a cell reads NwKs, e.g. 20w1s; got {text!r}") from None


def table(rows: list[dict]) -> str:
    lines = ["| checkpoint | setting | inner loop | support loss at 0 steps | 0 steps (= ProtoNet on its encoder) "
             "| after its inner steps | gain (paired 95% CI) | episodes worse / better |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lr = r.get("inner_lr", "learned")
        loop = f"{r['inner_steps']} x lr {lr if isinstance(lr, str) else format(lr, 'g')}"
        loop += f", clip {r['inner_grad_clip']:g}" if r["inner_grad_clip"] else ""
        loop += f", temperature {r['inner_temperature']:.3g}" if r.get("inner_temperature", 1.0) != 1.0 else ""
        loop += f", {r['inner_augment']} warped copies" if r.get("inner_augment") else ""
        loop += ", the head alone" if r.get("inner_params") == "head" else ""
        support = f"{r['support_loss_0']:.3g}" if "support_loss_0" in r else "-"
        if r.get("inner_temperature", 1.0) != 1.0:
            support += f" ({r['inner_loss_0']:.3g} tempered)"
        lines.append(f"| {Path(r['checkpoint']).name} | {r['n_way']}w{r['n_shot']}s | {loop} | {support} "
                     f"| {100 * r['accuracy_0_steps']:.2f} | {100 * r['accuracy_adapted']:.2f} "
                     f"| {100 * r['gain']:+.2f} ± {100 * r['gain_ci95']:.2f} | {r['episodes_worse']} / {r['episodes_better']} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--protocol", choices=("lake", "vinyals"), default="lake", help="the test split the episodes come from")
    p.add_argument("--checkpoints", nargs="*", default=DEFAULT)
    p.add_argument("--inner-grad-clip", type=float, default=None, help="override the checkpoints' own (0: off)")
    p.add_argument("--inner-lr", type=float, default=None, help="one fixed test-time inner rate for every layer")
    p.add_argument("--inner-steps", type=int, default=None, help="test-time inner steps")
    p.add_argument("--inner-temperature", type=float, default=None, help="the inner loss's temperature, fixed")
    p.add_argument("--inner-augment", type=int, default=None, help="warped copies of each support image in the inner loop")
    p.add_argument("--inner-params", choices=("all", "head"), default=None,
                   help="what the inner loop adapts: every weight, or only the linear head")
    p.add_argument("--settings", nargs="+", type=cell, default=list(SETTINGS), metavar="NwKs",
                   help="the cells, e.g. 20w1s 5w5s (default: 5w1s 5w5s 20w1s 20w5s)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "adaptation_gain.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    dataset = load_omniglot(args.protocol, "test", data_dir=args.data_dir)
    rows = [r for path in args.checkpoints for r in compare(path, dataset, args.episodes, args.inner_grad_clip, args.inner_lr,
                                                              args.inner_steps, args.inner_temperature, args.inner_augment,
                                                              args.protocol, args.inner_params, tuple(args.settings))]
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
