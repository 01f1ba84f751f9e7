"""Why the Vinyals 20-way FOMAML sat at 40.5% (issue 16 item 4): its head, its inner steps, against second-order MAML.

For each checkpoint: the norms of the meta-learned head's rows, then test accuracy (Vinyals split, 20-way 1-shot,
5 queries per class, seed 0) with its own head and with the head zeroed (every class starting equal, as a
permutation-invariant initialisation would), after 1, 3 and 5 inner steps of lr 0.4::

    python benchmarks/fomaml_diagnosis.py --data-dir DIR [--episodes 100] CHECKPOINT...

The history of each checkpoint (query loss and accuracy while meta-training) is printed too: a loss near
ln 20 = 3.0 throughout means the run never learned.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fewshot.checkpoints import load_checkpoint  # noqa: E402
from fewshot.omniglot import load_omniglot  # noqa: E402
from fewshot.tasks import TaskSampler  # noqa: E402
from fewshot.training import evaluate, use_fast_layout  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_omniglot("vinyals", "test", data_dir=args.data_dir, image_size=28)
    for path in args.checkpoints:
        model, info = load_checkpoint(path, "cpu")
        use_fast_layout(model)
        model.eval()
        history = info.metadata.get("history") or []
        print(path, "training history (step, query loss, query accuracy):",
              [(h["step"], round(h["loss"], 2), round(h["accuracy"], 3)) for h in history])
        head = model.net.head
        weight, bias = head.weight.detach().clone(), head.bias.detach().clone()
        print(f"  head rows: mean norm {weight.norm(dim=1).mean():.3f}, spread around their mean "
              f"{(weight - weight.mean(0)).norm(dim=1).mean():.3f}, bias std {bias.std():.3f}")
        for zero in (False, True):
            with torch.no_grad():
                head.weight.copy_(torch.zeros_like(weight) if zero else weight)
                head.bias.copy_(torch.zeros_like(bias) if zero else bias)
            for steps in (1, 3, 5):
                model.inner_steps_test, model.inner_lr_test = steps, 0.4
                sampler = TaskSampler(data, 20, 1, 5, seed=0)
                t0 = time.time()
                r = evaluate(model, (sampler.sample_task() for _ in range(args.episodes)))
                print(f"  head {'zeroed' if zero else 'as learned'}, {steps} step(s) of lr 0.4: "
                      f"{100 * r.accuracy:.1f} ± {100 * r.ci95:.1f} ({time.time() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
