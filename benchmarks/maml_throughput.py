"""MAML meta-iterations per second: the per-task loop vs the batched (grouped-convolution) pass.

    python benchmarks/maml_throughput.py --device cuda --iterations 20 [--first-order]

Settings of the MAML paper's Omniglot 5-way 1-shot run: meta-batch 32, 1 inner step (lr 0.4),
15 queries per class, second order, Conv-4 on 28x28. Prints one JSON line per mode and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from fewshot import MAML, SyntheticDataset, TaskSampler, resolve_device


def measure(model: MAML, tasks: list, batched: bool, iterations: int, device: torch.device) -> float:
    def one() -> None:
        model.zero_grad(set_to_none=True)
        if batched:
            model.batched_episode_loss(tasks)[0].backward()
        else:
            for task in tasks:
                (model.episode_loss(task)[0] / len(tasks)).backward()

    for _ in range(3):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iterations):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iterations


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--meta-batch-size", type=int, default=32)
    p.add_argument("--inner-steps", type=int, default=1)
    p.add_argument("--first-order", action="store_true")
    args = p.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = MAML(5, inner_steps=args.inner_steps, inner_lr=0.4, first_order=args.first_order).to(device).train()
    data = SyntheticDataset(40, 20, 28).to(device)
    sampler = TaskSampler(data, 5, 1, 15, seed=0)
    tasks = [sampler.sample_task() for _ in range(args.meta_batch_size)]
    out = {}
    for mode in ("loop", "batched"):
        seconds = measure(model, tasks, mode == "batched", args.iterations, device)
        out[mode] = seconds
        print(json.dumps({"mode": mode, "seconds_per_iteration": seconds, "iterations_per_second": 1 / seconds,
                          "device": str(device), "meta_batch_size": args.meta_batch_size,
                          "inner_steps": args.inner_steps, "first_order": args.first_order}), flush=True)
    print(json.dumps({"loop_over_batched": out["loop"] / out["batched"],
                      "paper_schedule_minutes_batched": 60000 * out["batched"] / 60}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
