"""MAML meta-iterations per second: the per-task loop vs the batched (grouped-convolution) pass.

    python benchmarks/maml_throughput.py --device cuda --iterations 20 [--first-order] [--cuda-graph]

Settings of the MAML paper's Omniglot 5-way 1-shot run: meta-batch 32, 1 inner step (lr 0.4),
15 queries per class, second order, Conv-4 on 28x28. Prints one JSON line per mode and the ratio.

``loop`` and ``batched`` time the meta-gradient (forward + backward). With ``--cuda-graph`` (CUDA only) two
more modes time whole meta-iterations, Adam step included, on tasks already on the GPU: ``batched+adam``
(eagerly) and ``cuda-graph`` (the same iteration captured once as a CUDA graph and replayed, so the ~1,000
small kernels of a meta-batch of 32 Conv-4s are launched without Python or per-kernel launch overhead; on an
H200 the batched pass used the GPU ~9% of the time). The graph line also reports how far its weights end up
from the eager iterations' after the same steps from the same start (``max_rel_weight_difference``).
This mode has not yet run on a GPU: no session with one has had it.
"""

from __future__ import annotations

import argparse
import copy
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


def measure_graph(model: MAML, tasks: list, iterations: int, device: torch.device) -> dict:
    """Eager ``batched+adam`` meta-iterations vs the same iteration as one replayed CUDA graph (PyTorch's
    whole-network capture recipe: warm-up on a side stream, grads set to None before capture, capturable Adam)."""
    if device.type != "cuda":
        raise SystemExit("--cuda-graph needs --device cuda")
    batch = model.stack_tasks(tasks)  # the label checks read label values: once, outside the graph
    warmup = 3

    def make() -> tuple[MAML, torch.optim.Optimizer]:
        m = copy.deepcopy(model)
        return m, torch.optim.Adam(m.parameters(), lr=1e-3, capturable=True)

    def step(m: MAML, opt: torch.optim.Optimizer) -> torch.Tensor:
        loss = m.stacked_episode_loss(*batch)[0]
        loss.backward()
        opt.step()
        return loss

    # Eager: warm-up + `iterations` timed steps.
    eager, eager_opt = make()
    for _ in range(warmup):
        eager_opt.zero_grad(set_to_none=True)
        step(eager, eager_opt)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iterations):
        eager_opt.zero_grad(set_to_none=True)
        step(eager, eager_opt)
    torch.cuda.synchronize()
    eager_s = (time.perf_counter() - t0) / iterations

    # Graph: the same warm-up steps eagerly on a side stream, capture, then replay `iterations` times.
    graphed, graph_opt = make()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            graph_opt.zero_grad(set_to_none=True)
            step(graphed, graph_opt)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    graph_opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = step(graphed, graph_opt)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iterations):
        graph.replay()
    torch.cuda.synchronize()
    graph_s = (time.perf_counter() - t0) / iterations

    # Both made warmup + iterations steps from the same weights on the same tasks.
    diff = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
               for a, b in zip(graphed.parameters(), eager.parameters()))
    return {"batched+adam": eager_s, "cuda-graph": graph_s, "max_rel_weight_difference": diff,
            "final_loss": float(static_loss.detach())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--loop-iterations", type=int, default=None,
                   help="iterations for the slow per-task loop (default: --iterations)")
    p.add_argument("--meta-batch-size", type=int, default=32)
    p.add_argument("--inner-steps", type=int, default=1)
    p.add_argument("--first-order", action="store_true")
    p.add_argument("--cuda-graph", action="store_true",
                   help="also time whole meta-iterations eagerly and as a replayed CUDA graph (CUDA only)")
    args = p.parse_args()
    if args.cuda_graph and args.device not in ("cuda", "auto"):
        p.error("--cuda-graph needs --device cuda")
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = MAML(5, inner_steps=args.inner_steps, inner_lr=0.4, first_order=args.first_order).to(device).train()
    data = SyntheticDataset(40, 20, 28).to(device)
    sampler = TaskSampler(data, 5, 1, 15, seed=0)
    tasks = [sampler.sample_task() for _ in range(args.meta_batch_size)]
    out = {}
    for mode in ("loop", "batched"):
        n = args.iterations if mode == "batched" or args.loop_iterations is None else args.loop_iterations
        seconds = measure(model, tasks, mode == "batched", n, device)
        out[mode] = seconds
        print(json.dumps({"mode": mode, "seconds_per_iteration": seconds, "iterations_per_second": 1 / seconds,
                          "device": str(device), "meta_batch_size": args.meta_batch_size,
                          "inner_steps": args.inner_steps, "first_order": args.first_order}), flush=True)
    print(json.dumps({"loop_over_batched": out["loop"] / out["batched"],
                      "paper_schedule_minutes_batched": 60000 * out["batched"] / 60}), flush=True)
    if args.cuda_graph:
        try:
            g = measure_graph(model, tasks, args.iterations, device)
        except SystemExit:
            raise
        except Exception as exc:  # a first run on new hardware: report, do not lose the lines above
            print(json.dumps({"mode": "cuda-graph", "error": f"{type(exc).__name__}: {exc}"}), flush=True)
            return 1
        for mode in ("batched+adam", "cuda-graph"):
            print(json.dumps({"mode": mode, "seconds_per_iteration": g[mode], "iterations_per_second": 1 / g[mode],
                              "device": str(device), "meta_batch_size": args.meta_batch_size,
                              "inner_steps": args.inner_steps, "first_order": args.first_order,
                              "includes_adam_step": True}), flush=True)
        print(json.dumps({"eager_over_graph": g["batched+adam"] / g["cuda-graph"],
                          "paper_schedule_minutes_graph": 60000 * g["cuda-graph"] / 60,
                          "max_rel_weight_difference": g["max_rel_weight_difference"],
                          "final_loss": g["final_loss"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
