"""Does MANN learn the separable synthetic task in a few dozen episodes? (Issue 2.)

    python benchmarks/mann_synthetic.py [--episodes 100] [--santoro]

Trains MANN (default architecture, Conv-4 encoder trained end to end) on fewshot.SyntheticDataset:
5-way sequences of 25 images (1 support + 4 queries per class, shuffled), meta-batch 4, Adam 3e-3,
one thread. Then reports, on held-out tasks of the same dataset:

- 5-way 1-shot accuracy on 200 tasks (the support set read as a sequence, each query the next step);
- Santoro et al.'s protocol on 200 sequences: accuracy at the 1st, 2nd, ... showing of a class.

``--santoro`` trains the architecture as published instead (label bound to memory only through the
controller's key, read after write, raw CNN features); it stays at chance at this budget.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fewshot import MANN, SyntheticDataset, TaskSampler, TrainConfig, evaluate, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--santoro", action="store_true", help="the published architecture (label_in_memory=False)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = SyntheticDataset(20, 20, 28)
    kwargs = {"label_in_memory": False, "feature_norm": False, "strength_init": None} if args.santoro else {}
    model = MANN(5, **kwargs)
    t0 = time.time()
    result = train(model, TaskSampler(data, 5, 1, 4, seed=0),
                   TrainConfig(episodes=args.episodes, meta_batch_size=4, meta_lr=3e-3, eval_every=0), log_every=10)
    seconds = time.time() - t0
    one_shot = evaluate(model, (TaskSampler(data, 5, 1, 5, seed=1).sample_task() for _ in range(200)))
    sequences = TaskSampler(data, 5, 1, 4, seed=2)
    instance = torch.stack([model.instance_accuracy(sequences.sample_task()) for _ in range(200)]).nanmean(0)[:5]
    report = {"episodes": args.episodes, "santoro": args.santoro, "train_seconds": round(seconds, 1),
              "loss_every_10": [round(h["loss"], 3) for h in result.history],
              "accuracy_5w1s": round(one_shot.accuracy, 4), "ci95": round(one_shot.ci95, 4),
              "instance_accuracy": [round(float(a), 3) for a in instance]}
    if args.json:
        print(json.dumps(report))
        return
    print(f"loss every 10 steps: {report['loss_every_10']} ({seconds:.0f} s)")
    print(f"5-way 1-shot: {one_shot.accuracy:.3f} ± {one_shot.ci95:.3f} (200 held-out tasks; chance 0.200)")
    print("instance accuracy (1st..5th showing):", " ".join(f"{a:.3f}" for a in report["instance_accuracy"]))


if __name__ == "__main__":
    main()
