"""Meta-training throughput, 1 process vs N data-parallel processes (gloo, CPU), in one go.

    python benchmarks/distributed_scaling.py --method maml --meta-batch-size 32 --data-dir ../shared/data/omniglot
    python benchmarks/distributed_scaling.py --method protonet --n-way 20 --n-query 5 --meta-batch-size 8

Each configuration trains the same model on the same task stream with ``fewshot.training.train``:
``1x1`` is the plain single-process path (one thread), ``1xT`` one process with T threads (the
alternative to more processes on one CPU), ``Nx1`` N processes of one thread each, joined by
:mod:`fewshot.distributed` exactly as ``torchrun --nproc-per-node=N`` joins them. Steps per second
are timed on rank 0 after ``--warmup`` steps. Prints one JSON line per configuration, then the
ratio of the N-process rate to the 1-process rate (2.0 would be perfect scaling on 2 cores).
Omniglot (Lake background set, x4 rotations) is used when ``--data-dir`` or ``$FEWSHOT_DATA_DIR``
is given, otherwise the built-in synthetic dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fewshot import SyntheticDataset, TaskSampler, TrainConfig, build_model, load_omniglot, train  # noqa: E402
from fewshot.distributed import init_from_env, shutdown  # noqa: E402


def _dataset(args: argparse.Namespace):
    if args.data_dir:
        return load_omniglot("lake", "train", data_dir=args.data_dir, image_size=28)
    return SyntheticDataset(n_classes=100, n_per_class=20, image_size=28)


def _run(args: argparse.Namespace, world_size: int, rank: int, port: int, out: str | None) -> float:
    """Steps per second measured on rank 0 (``nan`` on the other ranks)."""
    world = None
    if world_size > 1:
        os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        world = init_from_env("cpu")
    torch.manual_seed(0)
    kwargs = {"n_way": args.n_way} if args.method in ("maml", "fomaml") else {}
    model = build_model(args.method, **kwargs)
    sampler = TaskSampler(_dataset(args), args.n_way, args.n_shot, args.n_query, seed=0)
    stamps: list[float] = []
    config = TrainConfig(episodes=args.warmup + args.steps, meta_batch_size=args.meta_batch_size, eval_every=0,
                         seed=0)
    train(model, sampler, config, on_step=lambda log: stamps.append(time.perf_counter()), world=world)
    shutdown(world)
    rate = args.steps / (stamps[-1] - stamps[args.warmup - 1]) if rank == 0 else float("nan")
    if out is not None and rank == 0:
        Path(out).write_text(str(rate))
    return rate


def _worker(rank: int, args: argparse.Namespace, world_size: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    _run(args, world_size, rank, port, out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(args: argparse.Namespace, processes: int, threads: int) -> float:
    if processes == 1:
        torch.set_num_threads(threads)
        return _run(args, 1, 0, 0, None)
    out = Path(f"/tmp/fewshot-scaling-{os.getpid()}.txt")
    torch.multiprocessing.start_processes(_worker, args=(args, processes, _free_port(), str(out)), nprocs=processes,
                                          start_method="spawn")
    rate = float(out.read_text())
    out.unlink()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="maml")
    parser.add_argument("--n-way", type=int, default=5)
    parser.add_argument("--n-shot", type=int, default=1)
    parser.add_argument("--n-query", type=int, default=15)
    parser.add_argument("--meta-batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2, help="N of the N-process run")
    parser.add_argument("--data-dir", default=os.environ.get("FEWSHOT_DATA_DIR"))
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    common = {"method": args.method, "n_way": args.n_way, "n_shot": args.n_shot, "n_query": args.n_query,
              "meta_batch_size": args.meta_batch_size, "data": "omniglot-lake" if args.data_dir else "synthetic",
              "cpu_count": os.cpu_count(), "torch": torch.__version__}
    rates = {}
    for processes, threads in ((1, 1), (1, args.processes), (args.processes, 1)):
        rate = measure(args, processes, threads)
        rates[(processes, threads)] = rate
        print(json.dumps({**common, "processes": processes, "threads_per_process": threads,
                          "steps_per_s": round(rate, 4), "tasks_per_s": round(rate * args.meta_batch_size, 2)}),
              flush=True)
    one, many, threaded = rates[(1, 1)], rates[(args.processes, 1)], rates[(1, args.processes)]
    print(f"{args.processes} processes / 1 process: {many / one:.2f}x "
          f"(1 process with {args.processes} threads: {threaded / one:.2f}x)")


if __name__ == "__main__":
    main()
