"""A MANN checkpoint in Santoro et al.'s own protocol: accuracy at the 1st, 2nd, ... showing of a class.

    python benchmarks/mann_instances.py --checkpoint PATH [--protocol lake] [--data-dir DIR] [--sequences 1000]

Omniglot test split of the protocol, 5 classes x 10 instances = 50-image sequences, sampler seed 0
(the same sequences as ``benchmarks/accuracy.py`` uses for the shipped MANN). Prints one JSON object:
the mean accuracy per instance and its 95% CI half-width.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from fewshot import TaskSampler, load_checkpoint, load_omniglot


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--protocol", choices=["lake", "vinyals"], default="lake")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--sequences", type=int, default=1000)
    args = p.parse_args()
    torch.set_num_threads(1)
    model, _ = load_checkpoint(args.checkpoint, expect_method="mann")
    sampler = TaskSampler(load_omniglot(args.protocol, "test", data_dir=args.data_dir), 5, 10, 0, seed=0)
    rows = torch.stack([model.instance_accuracy(sampler.sample_task()) for _ in range(args.sequences)])
    mean, ci = rows.nanmean(0), 1.96 * rows.std(0) / math.sqrt(rows.shape[0])
    print(json.dumps({"checkpoint": args.checkpoint, "protocol": args.protocol, "sequences": args.sequences,
                      "instance_accuracy": [round(float(x), 4) for x in mean],
                      "instance_ci95": [round(float(x), 4) for x in ci]}))


if __name__ == "__main__":
    main()
