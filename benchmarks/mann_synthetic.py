"""Does MANN learn the separable synthetic task in a few dozen episodes? (Issue 2; it does not yet.)

    python benchmarks/mann_synthetic.py [--episodes 60]

Trains MANN (Conv-4 encoder) on fewshot.SyntheticDataset, 5-way sequences of 25 images, meta-batch 4,
then evaluates 5-way 1-shot on 50 held-out tasks. Prints the loss history and the accuracy.
"""

from __future__ import annotations

import argparse
import time

import torch

from fewshot import MANN, SyntheticDataset, TaskSampler, TrainConfig, evaluate, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=60)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = SyntheticDataset(20, 20, 28)
    model = MANN(5)
    t0 = time.time()
    result = train(model, TaskSampler(data, 5, 1, 4, seed=0),
                   TrainConfig(episodes=args.episodes, meta_batch_size=4, meta_lr=3e-3, eval_every=0), log_every=10)
    held_out = TaskSampler(data, 5, 1, 5, seed=1)
    print("loss every 10 steps:", [round(h["loss"], 3) for h in result.history], f"({time.time() - t0:.0f} s)")
    print(evaluate(model, (held_out.sample_task() for _ in range(50))))


if __name__ == "__main__":
    main()
