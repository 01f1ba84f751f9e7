"""Speed of fewshot beside the libraries people use today, measured side by side in one run (issue 5).

    bash benchmarks/install_peers.sh          # higher, easyfsl, learn2learn (built from its sdist)
    python benchmarks/speed.py [--quick] [--json benchmarks/results/speed.json] [--only maml,protonet,memory,demo,demo-maml,floor]

Sections (each prints a markdown table; ``--json`` writes everything):

* ``maml``: one second-order MAML meta-iteration (5-way 1-shot, 15 queries per class, 4 tasks,
  5 inner steps, inner lr 0.4, Conv-4 on 28x28) by: a plain ``functional_call`` + ``autograd.grad``
  loop, higher, learn2learn, and fewshot (its per-task loop, what ``train`` runs on a CPU, and the
  batched pass it runs on a GPU).
  All start from the same weights and see the same tasks; the meta-gradients are compared with the
  plain loop's (max abs difference / max abs value). Also first order.
* ``protonet``: one ProtoNet training episode (forward, loss, backward, Adam step) by easyfsl and by
  fewshot, same backbone weights, same episodes, same loss.
* ``memory``: peak memory (RSS growth of a fresh process) of one second-order meta-iteration for each
  implementation, and fewshot with and without ``checkpoint_inner`` as the inner steps grow.
* ``demo``: what the app needs: one MAML inner step on a 5-way 1-shot task, classifying a 5-way task
  with every shipped checkpoint, t-SNE of 1000 points, loading Omniglot from its cache, and the
  app's time from ``streamlit run`` to a rendered page (headless chromium when available).
* ``demo-maml``: only the MAML inner step of ``demo`` (beside the same step through ``functional_call``).
* ``app-ab`` (with ``--compare-with DIR``): ``demo``'s app start for another checkout and this one, alternated.
* ``maml-profile``: torch.profiler of one second-order meta-iteration (plain loop, fewshot's per-task loop):
  top operators by self CPU time and the convolution kernels' share.
* ``floor``: the compute floor: this CPU's fp32 matrix-product rate and the FLOPs each benchmark's matrix
  products and convolutions need (``torch.utils.flop_counter``), so floor = FLOPs / rate; with ``maml``,
  ``protonet`` and ``demo-maml`` in the same run it also prints measured / floor and the largest speed-up over
  each peer that doing the same arithmetic at that rate would allow.

Timings are interleaved (round r runs every implementation once) and reported as medians over
rounds; ratios are of medians. Run it on an otherwise idle machine: the figures are only as quiet
as the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call  # noqa: E402

from fewshot import MAML, PrototypicalNetwork, SyntheticDataset, TaskSampler  # noqa: E402

N_WAY, N_SHOT, N_QUERY, META_BATCH, INNER_STEPS, INNER_LR = 5, 1, 15, 4, 5, 0.4
CHANNELS_LAST = True  # fewshot's models as train() runs them on a CPU (TrainConfig.channels_last); --nchw turns it off


# --------------------------------------------------------------------------- reference model

def reference_conv4(n_way: int = N_WAY, hidden: int = 64) -> nn.Sequential:
    """The textbook Conv-4 the peers' examples use: (conv3x3-BN-ReLU-maxpool) x4, flatten, linear.

    BatchNorm keeps no running statistics (MAML's transductive mode, as in fewshot's MAML).
    """
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [nn.Conv2d(1 if i == 0 else hidden, hidden, 3, padding=1),
                   nn.BatchNorm2d(hidden, track_running_stats=False), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(hidden, n_way))


def copy_into_reference(model: MAML, ref: nn.Sequential) -> None:
    """Give ``ref`` exactly the weights of ``model``'s network."""
    with torch.no_grad():
        for i in range(4):
            block = model.net.backbone.blocks[i]
            ref[4 * i].weight.copy_(block.conv.weight)
            ref[4 * i].bias.copy_(block.conv.bias)
            ref[4 * i + 1].weight.copy_(block.norm.weight)
            ref[4 * i + 1].bias.copy_(block.norm.bias)
        ref[-1].weight.copy_(model.net.head.weight)
        ref[-1].bias.copy_(model.net.head.bias)


def reference_grads(ref: nn.Sequential) -> list[torch.Tensor]:
    """The reference model's gradients in fewshot's parameter order (conv w, b, norm w, b per block; head)."""
    order = []
    for i in range(4):
        order += [ref[4 * i].weight, ref[4 * i].bias, ref[4 * i + 1].weight, ref[4 * i + 1].bias]
    order += [ref[-1].weight, ref[-1].bias]
    return [p.grad.detach().clone() for p in order]


def fewshot_grads(model: MAML) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.net.parameters()]


def grad_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max |a - b| / max |b| over all parameters."""
    num = max(float((x - y).abs().max()) for x, y in zip(a, b))
    return num / max(float(y.abs().max()) for y in b)


# --------------------------------------------------------------------------- timing

def time_interleaved(fns: dict[str, Callable[[], None]], rounds: int, warmup: int = 1) -> dict[str, dict[str, float]]:
    """Run every function once per round, in turn; median and min of wall and CPU seconds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {k: {"median_s": statistics.median(wall[k]), "min_s": min(wall[k]), "cpu_median_s": statistics.median(cpu[k]),
                "rounds": rounds} for k in fns}


def make_tasks(n_way: int, n_shot: int, n_query: int, count: int, seed: int = 0) -> list:
    sampler = TaskSampler(SyntheticDataset(max(n_way, 20), n_shot + n_query + 2, 28, seed=seed), n_way, n_shot, n_query,
                          seed=seed)
    return [sampler.sample_task() for _ in range(count)]


# --------------------------------------------------------------------------- MAML implementations

def maml_implementations(model: MAML, ref: nn.Sequential, tasks: list, first_order: bool) -> dict[str, Callable[[], None]]:
    """Each callable runs one meta-iteration and leaves the meta-gradient in its model's ``.grad``."""
    n = len(tasks)
    second = not first_order
    impls: dict[str, Callable[[], None]] = {}

    def plain() -> None:
        ref.zero_grad(set_to_none=True)
        params = dict(ref.named_parameters())
        for t in tasks:
            w = params
            for _ in range(INNER_STEPS):
                loss = F.cross_entropy(functional_call(ref, w, (t.support_images,)), t.support_labels)
                grads = torch.autograd.grad(loss, list(w.values()), create_graph=second)
                w = {k: v - INNER_LR * g for (k, v), g in zip(w.items(), grads)}
            (F.cross_entropy(functional_call(ref, w, (t.query_images,)), t.query_labels) / n).backward()
    impls["plain functional_call loop"] = plain

    try:
        import higher

        opt = torch.optim.SGD(ref.parameters(), lr=INNER_LR)

        def with_higher() -> None:
            ref.zero_grad(set_to_none=True)
            for t in tasks:
                with higher.innerloop_ctx(ref, opt, copy_initial_weights=False, track_higher_grads=second) as (fm, diffopt):
                    for _ in range(INNER_STEPS):
                        diffopt.step(F.cross_entropy(fm(t.support_images), t.support_labels))
                    query_loss = F.cross_entropy(fm(t.query_images), t.query_labels) / n
                    if second:
                        query_loss.backward()
                    else:  # higher's first-order recipe: the query gradient at the fast weights, added by hand
                        grads = torch.autograd.grad(query_loss, list(fm.parameters()))
                        for p, g in zip(ref.parameters(), grads):
                            p.grad = g if p.grad is None else p.grad + g
        impls["higher 0.2.1"] = with_higher
    except ImportError:
        print("(higher is not installed: bash benchmarks/install_peers.sh)", file=sys.stderr)

    try:
        import learn2learn as l2l

        wrapped = l2l.algorithms.MAML(ref, lr=INNER_LR, first_order=first_order)

        def with_l2l() -> None:
            ref.zero_grad(set_to_none=True)
            for t in tasks:
                learner = wrapped.clone()
                for _ in range(INNER_STEPS):
                    learner.adapt(F.cross_entropy(learner(t.support_images), t.support_labels))
                (F.cross_entropy(learner(t.query_images), t.query_labels) / n).backward()
        impls[f"learn2learn {l2l.__version__}"] = with_l2l
    except ImportError:
        print("(learn2learn is not installed: bash benchmarks/install_peers.sh)", file=sys.stderr)

    def ours_loop() -> None:
        model.zero_grad(set_to_none=True)
        for t in tasks:
            (model.episode_loss(t)[0] / n).backward()
    impls["fewshot, per-task loop"] = ours_loop

    def ours() -> None:
        model.zero_grad(set_to_none=True)
        result = model.batched_episode_loss(tasks)
        assert result is not None
        result[0].backward()
    impls["fewshot, batched pass"] = ours
    return impls


def maml_setup(first_order: bool) -> tuple[MAML, nn.Sequential, dict[str, Callable[[], None]]]:
    """fewshot's MAML and the reference Conv-4 with the same weights (fewshot's in ``channels_last`` unless
    ``--nchw``, as ``train()`` runs it on a CPU), and every implementation's meta-iteration on the same tasks."""
    torch.manual_seed(0)
    model = MAML(N_WAY, inner_steps=INNER_STEPS, inner_lr=INNER_LR, first_order=first_order)
    ref = reference_conv4()
    copy_into_reference(model, ref)
    tasks = make_tasks(N_WAY, N_SHOT, N_QUERY, META_BATCH)
    if CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    return model, ref, maml_implementations(model, ref, tasks, first_order)


def bench_maml(rounds: int, first_order: bool) -> dict:
    model, ref, impls = maml_setup(first_order)
    # Numerics: every implementation's meta-gradient against the plain loop's.
    impls["plain functional_call loop"]()
    expected = reference_grads(ref)
    agreement = {}
    for name, fn in impls.items():
        fn()
        got = fewshot_grads(model) if name.startswith("fewshot") else reference_grads(ref)
        agreement[name] = grad_difference(got, expected)
    times = time_interleaved(impls, rounds)
    ours = times["fewshot, per-task loop"]["median_s"]  # what train() runs on a CPU (TrainConfig.batch_tasks)
    rows = {name: {**t, "grad_difference": agreement[name], "fewshot_speedup": t["median_s"] / ours}
            for name, t in times.items()}
    return {"settings": {"n_way": N_WAY, "n_shot": N_SHOT, "n_query": N_QUERY, "meta_batch": META_BATCH,
                         "inner_steps": INNER_STEPS, "inner_lr": INNER_LR, "first_order": first_order,
                         "image_size": 28, "backbone": "Conv-4 (64 filters)"},
            "results": rows}


def profile_maml(first_order: bool = False, rows: int = 12) -> dict:
    """Where one meta-iteration's CPU time goes (torch.profiler, self CPU time), for the plain loop and for
    fewshot's per-task loop: the top operators and the share of the convolution kernels
    (forward, backward and double backward)."""
    from torch.profiler import profile
    impls = maml_setup(first_order)[2]
    out = {}
    for name in ("plain functional_call loop", "fewshot, per-task loop"):
        impls[name]()  # warm-up
        with profile() as prof:
            impls[name]()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        conv = sum(e.self_cpu_time_total for e in events if "convolution" in e.key)
        print(f"\n{name}: convolution kernels {conv / total:.0%} of self CPU time")
        print(events.table(sort_by="self_cpu_time_total", row_limit=rows))
        out[name] = {"convolution_share": conv / total, "self_cpu_s": total / 1e6,
                     "top": [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in
                             sorted(events, key=lambda e: -e.self_cpu_time_total)[:rows]]}
    return out


# --------------------------------------------------------------------------- ProtoNet vs easyfsl

def bench_protonet(rounds: int, n_way: int, n_shot: int, n_query: int) -> dict | None:
    try:
        from easyfsl.methods import PrototypicalNetworks
    except ImportError:
        print("(easyfsl is not installed: bash benchmarks/install_peers.sh)", file=sys.stderr)
        return None
    import copy
    torch.manual_seed(0)
    ours = PrototypicalNetwork()
    # easyfsl's PrototypicalNetworks takes any backbone; give it the same Conv-4 with the same weights.
    theirs = PrototypicalNetworks(copy.deepcopy(ours.backbone))
    if CHANNELS_LAST:
        ours.to(memory_format=torch.channels_last)  # as train() does on a CPU
    opt_ours = torch.optim.Adam(ours.parameters(), 1e-3)
    opt_theirs = torch.optim.Adam(theirs.parameters(), 1e-3)
    tasks = make_tasks(n_way, n_shot, n_query, 4, seed=1)
    state = {"i": 0}

    def easyfsl_episode() -> None:
        t = tasks[state["i"] % len(tasks)]
        opt_theirs.zero_grad()
        theirs.process_support_set(t.support_images, t.support_labels)
        loss = F.cross_entropy(theirs(t.query_images), t.query_labels)
        loss.backward()
        opt_theirs.step()

    def fewshot_episode() -> None:
        t = tasks[state["i"] % len(tasks)]
        opt_ours.zero_grad()
        loss, _ = ours.episode_loss(t)
        loss.backward()
        opt_ours.step()

    # Not the same numbers, by design: easyfsl's ProtoNet scores with the Euclidean distance (Snell et al.
    # use its square, as fewshot does) and passes support and query through BatchNorm separately
    # (fewshot: one batch). Both losses are recorded for the first episode, from identical weights.
    t = tasks[0]
    with torch.no_grad():
        theirs.process_support_set(t.support_images, t.support_labels)
        loss_theirs = float(F.cross_entropy(theirs(t.query_images), t.query_labels))
        loss_ours = float(ours.episode_loss(t)[0])
    agreement = {"first_episode_loss": {"easyfsl": loss_theirs, "fewshot": loss_ours},
                 "note": "easyfsl: Euclidean distance, support and query in separate BatchNorm batches; "
                         "fewshot: squared Euclidean (the paper), one batch"}
    times = time_interleaved({"easyfsl 1.5.0": easyfsl_episode, "fewshot": fewshot_episode}, rounds)
    return {"settings": {"n_way": n_way, "n_shot": n_shot, "n_query": n_query, "image_size": 28,
                         "step": "forward + cross-entropy + backward + Adam"},
            "agreement": agreement, "results": times,
            "fewshot_speedup": times["easyfsl 1.5.0"]["median_s"] / times["fewshot"]["median_s"]}


# --------------------------------------------------------------------------- compute floor

def gemm_peak(rounds: int) -> dict:
    """This CPU's fp32 matrix-product rate (GFLOP/s) at the benchmark's thread count, on the shapes Conv-4's
    convolutions have as matrix products: ``(images*H*W, 9*64) @ (9*64, 64)`` for 5 to 75 images at 14x14, and a
    1024-cube. The best shape's median is the peak: a floor computed with it is a lower bound."""
    rates = {}
    shapes = [(images * 14 * 14, 576, 64) for images in (5, 20, 75)] + [(1024, 1024, 1024)]  # + a large square one
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
        times = time_interleaved({"mm": lambda: a @ b}, max(rounds, 10), warmup=3)["mm"]
        rates[f"{a.shape[0]}x{a.shape[1]}x{b.shape[1]}"] = flops / times["median_s"] / 1e9
    return {"gflops_by_shape": rates, "peak_gflops": max(rates.values()), "threads": torch.get_num_threads()}


def count_flops(fn: Callable[[], None]) -> int:
    """Floating-point operations of the matrix products and convolutions (forward, backward, double backward)
    that ``fn`` runs, by ``torch.utils.flop_counter``; the element-wise work (BatchNorm, ReLU, pooling) is not
    counted, so the floor below is optimistic."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def bench_floor(rounds: int) -> dict:
    """How fast each benchmark could be at the very best on this CPU: its counted FLOPs at the GEMM peak.

    For every implementation of the second-order MAML meta-iteration, the ProtoNet episodes and the demo's MAML
    inner step: GFLOPs and ``floor_s = FLOPs / peak``. A fewshot speed-up over a peer can exceed
    ``peer time / fewshot's floor`` only by doing less arithmetic than counted here. The times to compare are the
    ones measured in the same run (``--only maml,protonet,demo-maml,floor``).
    """
    peak = gemm_peak(rounds)
    rate = peak["peak_gflops"] * 1e9
    out: dict = {"gemm": peak, "flops": {}}

    def record(key: str, fns: dict[str, Callable[[], None]]) -> None:
        out["flops"][key] = {}
        for name, fn in fns.items():
            fn()  # warm-up outside the counter
            flops = count_flops(fn)
            out["flops"][key][name] = {"gflop": flops / 1e9, "floor_s": flops / rate}

    for first_order, key in ((False, "maml_second_order"), (True, "maml_first_order")):
        impls = maml_setup(first_order)[2]
        impls.pop("fewshot, batched pass")  # not what train() runs on a CPU (TrainConfig.batch_tasks)
        record(key, impls)
    for n_way, n_shot, n_query, key in ((5, 5, 15, "protonet_5w5s"), (60, 5, 5, "protonet_60w5s")):
        torch.manual_seed(0)
        ours = PrototypicalNetwork()
        if CHANNELS_LAST:
            ours.to(memory_format=torch.channels_last)
        t = make_tasks(n_way, n_shot, n_query, 1, seed=1)[0]

        def episode(model=ours, task=t) -> None:
            model.zero_grad(set_to_none=True)
            model.episode_loss(task)[0].backward()
        record(key, {"fewshot": episode})
    from fewshot import load_checkpoint
    path = ROOT / "checkpoints" / "lake" / "maml.safetensors"
    maml = load_checkpoint(path, expect_method="maml")[0] if path.exists() else MAML(5).eval()
    task = make_tasks(5, 1, 1, 1)[0]

    def run(steps_to_yield: int) -> Callable[[], None]:
        def fn() -> None:
            gen = maml.adaptation(task.support_images, task.support_labels, task.query_images, inner_steps=5)
            for _ in range(steps_to_yield):
                next(gen)
        return fn
    # bench_demo_maml times steps 1..5 after step 0 and divides by 5: the same difference here.
    run(6)(), run(1)()
    flops = (count_flops(run(6)) - count_flops(run(1))) / 5
    out["flops"]["demo_maml_inner_step"] = {"fewshot": {"gflop": flops / 1e9, "floor_s": flops / rate}}
    out["imports"] = import_seconds(3)
    return out


def import_seconds(repeats: int) -> dict:
    """Wall seconds of ``import streamlit`` and of ``import torch`` in fresh interpreters (medians): the server
    must do both before any page that uses a model can render, one after the other in practice (importing
    holds the GIL), so their sum is a floor under the app's start-up."""
    out = {}
    for module in ("streamlit", "torch"):
        code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
        runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                      .stdout.split()[-1]) for _ in range(repeats)]
        out[module] = statistics.median(runs)
    out["sum_s"] = sum(out.values())
    return out


# --------------------------------------------------------------------------- memory

def memory_child(impl: str, inner_steps: int, checkpoint_inner: bool, n_way: int, n_shot: int) -> None:
    """Run in a fresh process: print the peak RSS growth (MiB) of one second-order meta-iteration."""
    global INNER_STEPS
    INNER_STEPS = inner_steps
    torch.manual_seed(0)
    model = MAML(n_way, inner_steps=inner_steps, inner_lr=INNER_LR, checkpoint_inner=checkpoint_inner)
    if CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    ref = reference_conv4(n_way)
    copy_into_reference(model, ref)
    tasks = make_tasks(n_way, n_shot, N_QUERY, META_BATCH)
    impls = maml_implementations(model, ref, tasks, first_order=False)
    fn = impls[impl]

    def status_mib(field: str) -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024  # kB
    gc.collect()
    try:  # Linux: reset the peak RSS (VmHWM) to the current RSS, so imports and the warm-up do not count
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    before = status_mib("VmRSS")
    fn()
    peak = status_mib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_growth_mib": peak - before, "peak_reset": reset}))


def run_memory_child(impl: str, inner_steps: int, checkpoint_inner: bool = False, n_way: int = N_WAY,
                     n_shot: int = N_SHOT) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-child", impl, "--inner-steps", str(inner_steps),
                          "--n-way", str(n_way), "--n-shot", str(n_shot)]
                         + (["--checkpoint-inner"] if checkpoint_inner else []),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_mib"]


def bench_memory(quick: bool) -> dict:
    model = MAML(N_WAY)
    names = list(maml_implementations(model, reference_conv4(), make_tasks(N_WAY, N_SHOT, N_QUERY, 1), False))
    peers = {name: run_memory_child(name, INNER_STEPS) for name in names}
    steps = [1, 5] if quick else [1, 5, 10]
    growth: dict[str, dict[str, float]] = {"20-way 5-shot": {}}
    for s in steps:
        row = {}
        for ck in (False, True):
            row["checkpoint_inner" if ck else "default"] = run_memory_child("fewshot, batched pass", s, ck, 20, 5)
        growth["20-way 5-shot"][str(s)] = row
    # The time cost of checkpointing, same run.
    torch.manual_seed(0)
    plain_model = MAML(20, inner_steps=5, inner_lr=INNER_LR)
    ck_model = MAML(20, inner_steps=5, inner_lr=INNER_LR, checkpoint_inner=True)
    ck_model.load_state_dict(plain_model.state_dict())
    tasks = make_tasks(20, 5, N_QUERY, META_BATCH)

    def step(m: MAML) -> Callable[[], None]:
        def run() -> None:
            m.zero_grad(set_to_none=True)
            m.batched_episode_loss(tasks)[0].backward()
        return run
    cost = time_interleaved({"default": step(plain_model), "checkpoint_inner": step(ck_model)}, 2 if quick else 5)
    return {"meta_iteration_5w1s_5_steps_mib": peers, "fewshot_vs_inner_steps_mib": growth,
            "checkpoint_time_20w5s_5_steps": cost,
            "checkpoint_time_ratio": cost["checkpoint_inner"]["median_s"] / cost["default"]["median_s"]}


# --------------------------------------------------------------------------- demo latencies

def bench_demo_maml(quick: bool) -> dict:
    """One MAML inner step as the app's live view runs it: ``adaptation`` (``adapt_steps``) of the shipped
    5-way model on a 5-way 1-shot task with 5 queries, 5 steps, per-step median.

    Interleaved with the same steps through ``functional_call`` on the module in NCHW (fewshot's direct
    Conv-4 path turned off: the code before issue 5's CPU work), so the ratio comes from one run.
    """
    from fewshot import load_checkpoint
    import fewshot.methods.maml as maml_module

    ckpt_dir = ROOT / "checkpoints" / "lake"
    maml = load_checkpoint(ckpt_dir / "maml.safetensors", expect_method="maml")[0] \
        if (ckpt_dir / "maml.safetensors").exists() else MAML(5).eval()
    task = make_tasks(5, 1, 1, 1)[0]
    direct = maml_module._direct_conv4

    def one_run(straightforward: bool) -> float:
        maml_module._direct_conv4 = (lambda net, weights: None) if straightforward else direct
        try:
            gen = maml.adaptation(task.support_images, task.support_labels, task.query_images, inner_steps=5)
            next(gen)  # step 0: the initialisation
            t0 = time.perf_counter()
            for _ in gen:
                pass
            return (time.perf_counter() - t0) / 5
        finally:
            maml_module._direct_conv4 = direct

    one_run(False), one_run(True)  # warm-up
    fast, plain = [], []
    for _ in range(5 if quick else 20):
        fast.append(one_run(False))
        plain.append(one_run(True))
    median, plain_median = statistics.median(fast), statistics.median(plain)
    return {"median_s": median, "min_s": min(fast), "target_s": 0.005,
            "functional_call_nchw_median_s": plain_median, "speedup": plain_median / median,
            "rounds": len(fast), "threads": torch.get_num_threads()}


def bench_demo(quick: bool) -> dict:
    from fewshot import load_checkpoint, tsne_2d
    from fewshot.omniglot import load_omniglot_arrays

    out: dict[str, dict] = {"maml_inner_step": bench_demo_maml(quick)}
    ckpt_dir = ROOT / "checkpoints" / "lake"
    # Classify one 5-way 1-shot task with every shipped Lake checkpoint.
    models = [load_checkpoint(p)[0] for p in sorted(ckpt_dir.glob("*.safetensors"))]
    task = make_tasks(5, 1, 5, 1)[0]

    def classify_all() -> None:
        with torch.no_grad():
            for m in models:
                m.process_support_set(task.support_images, task.support_labels)
                m(task.query_images)
    out["classify_every_method"] = {**time_interleaved({"all": classify_all}, 5 if quick else 20)["all"],
                                    "methods": len(models), "target_s": 0.5}
    # t-SNE of 1000 64-d points.
    feats = torch.randn(1000, 64)
    t0 = time.perf_counter()
    tsne_2d(feats)
    out["tsne_1000"] = {"median_s": time.perf_counter() - t0, "target_s": 2.0}
    # Omniglot from its cache (needs FEWSHOT_DATA_DIR and a cache made once).
    data_dir = os.environ.get("FEWSHOT_DATA_DIR")
    if data_dir:
        load_omniglot_arrays(data_dir)  # makes the cache on the first run
        t0 = time.perf_counter()
        load_omniglot_arrays(data_dir)  # both subsets, 32,460 images
        out["omniglot_from_cache"] = {"median_s": time.perf_counter() - t0, "target_s": 3.0}
    out["app_ready"] = app_ready_seconds()  # the browser already running, as a person's is
    out["app_ready_browser_launched_after_server"] = app_ready_seconds(browser_open=False)  # how it was timed before
    return out


def app_ready_seconds(repeats: int = 3, root: Path = ROOT, browser_open: bool = True) -> dict:
    """``streamlit run app.py`` until the home page is ready to use in headless chromium, then Build a task -> Classify.

    Every repeat starts a fresh server (nothing imported or cached) and a fresh browser. ``browser_open=True`` (the
    default): the browser is already running when the server starts, as a person's is when they run the app;
    ``False``: chromium is launched when the server is, and competes with it for the CPU. It records:
    ``health_s`` (the health endpoint answers), ``home_text_s`` (the home page's text is shown), ``median_s`` =
    ready to use (the home page complete: its example episode classified and the script idle), ``build_s`` (a
    click on *Build a task* until that page is idle), ``classify_s`` (the example task loaded, a click on
    *Classify* until the predictions are shown) and the server's CPU seconds until the home page was complete and
    at the end (steadier than wall time on a shared machine). Medians over ``repeats``; without chromium or
    playwright only the health endpoint is timed. ``root``: the checkout whose ``app.py`` runs (to compare commits).
    """
    import socket
    import statistics
    import urllib.request

    chromium = os.environ.get("FEWSHOT_CHROMIUM", "/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    browser_ok = sync_playwright is not None and Path(chromium).exists()
    idle = """() => {
        const app = document.querySelector('[data-testid="stApp"]');
        if (!app || app.getAttribute('data-test-script-state') === 'running') return false;
        return !document.querySelector('[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]');
    }"""
    tick = os.sysconf("SC_CLK_TCK")

    def server_cpu(pid: int) -> float:  # utime + stime of the server process (Linux /proc)
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            return float("nan")

    def one_run() -> dict:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
        with ExitStack() as stack:
            p = stack.enter_context(sync_playwright()) if browser_ok else None

            def open_page():
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                stack.callback(browser.close)
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                page.set_default_timeout(120_000)
                return page

            page = None
            if browser_ok and browser_open:  # a person's browser is running before they start the app
                page = open_page()
                page.goto("about:blank")
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(Path(root) / "app.py"),
                                     "--server.headless", "true", "--server.port", str(port)], cwd=root, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stack.callback(proc.wait, timeout=10)
            stack.callback(proc.terminate)
            url = f"http://127.0.0.1:{port}"
            while True:
                try:
                    urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                    break
                except OSError:
                    if time.perf_counter() - t0 > 60:
                        return {"error": "server did not answer within 60 s"}
                    time.sleep(0.05)
            row = {"health_s": time.perf_counter() - t0}
            if not browser_ok:
                return row
            if page is None:  # browser_open=False: chromium starts once the server answers
                page = open_page()
            page.goto(url)
            page.get_by_text("N-way K-shot", exact=False).first.wait_for()
            row["home_text_s"] = time.perf_counter() - t0
            page.get_by_text("Next: ", exact=False).first.wait_for()  # the last line of the home page
            page.wait_for_function(idle, polling=50)
            row["median_s"] = time.perf_counter() - t0
            row["server_cpu_s"] = server_cpu(proc.pid)
            t1 = time.perf_counter()
            page.locator('[data-testid="stSidebarNav"] a', has_text="Build a task").first.click()
            page.get_by_role("heading", name="Build a task", level=1).wait_for()
            page.wait_for_function(idle, polling=50)
            row["build_s"] = time.perf_counter() - t1
            page.get_by_role("button", name="Load the example task (synthetic symbols)").click()
            page.get_by_text("Task status: 5/5", exact=False).first.wait_for()
            page.wait_for_function(idle, polling=50)
            t2 = time.perf_counter()
            page.get_by_role("button", name="Classify", exact=True).click()
            page.get_by_text("Prediction for Query 1", exact=False).first.wait_for()
            page.wait_for_function(idle, polling=50)
            row["classify_s"] = time.perf_counter() - t2
            row["server_cpu_end_s"] = server_cpu(proc.pid)
            return row

    runs = [one_run() for _ in range(repeats)]
    if any("error" in r for r in runs):
        return next(r for r in runs if "error" in r)
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out.update(target_s=5.0, repeats=repeats, runs=runs, omniglot=bool(os.environ.get("FEWSHOT_DATA_DIR")),
               browser_open=browser_open,
               what="median_s: launch until the home page is complete (example episode answered, script idle)")
    return out


def app_ready_ab(other: Path, rounds: int) -> dict:
    """App ready of another checkout (``other``, e.g. a ``git worktree`` of an older commit) and of this one, one
    fresh server each, alternating (other, this, this, other, ...) so that both see the same machine; medians."""
    import statistics

    roots = {"other": Path(other).resolve(), "this": ROOT}
    runs: dict[str, list[dict]] = {k: [] for k in roots}
    for i in range(rounds):
        for key in ("other", "this") if i % 2 == 0 else ("this", "other"):
            row = app_ready_seconds(repeats=1, root=roots[key])
            if "error" in row:
                return row
            runs[key].append(row["runs"][0])
    medians = {k: {f: statistics.median(r[f] for r in rs) for f in rs[0]} for k, rs in runs.items()}
    return {"other": str(roots["other"]), "this": str(ROOT), "rounds": rounds, "medians": medians, "runs": runs,
            "ratio_other_over_this": medians["other"]["median_s"] / medians["this"]["median_s"]}


# --------------------------------------------------------------------------- report

def fmt(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 10 else f"{s:.1f} s"


def report(results: dict) -> str:
    lines = [f"Machine: {results['machine']}", ""]
    for key, title in (("maml_second_order", "Second-order MAML meta-iteration"),
                       ("maml_first_order", "First-order MAML meta-iteration")):
        if key in results:
            r = results[key]
            s = r["settings"]
            lines += [f"**{title}** ({s['n_way']}-way {s['n_shot']}-shot, {s['n_query']} queries/class, "
                      f"{s['meta_batch']} tasks, {s['inner_steps']} inner steps)", "",
                      "| implementation | median | CPU time | fewshot is × faster | meta-gradient vs plain loop |",
                      "|---|---|---|---|---|"]
            for name, row in r["results"].items():
                lines.append(f"| {name} | {fmt(row['median_s'])} | {fmt(row['cpu_median_s'])} | "
                             f"{row['fewshot_speedup']:.2f} | {row['grad_difference']:.1e} |")
            lines.append("")
    for key in ("protonet_5w5s", "protonet_60w5s"):
        r = results.get(key)
        if r:
            s = r["settings"]
            lines += [f"**ProtoNet training episode** ({s['n_way']}-way {s['n_shot']}-shot, {s['n_query']} queries/class, "
                      "same episodes, same initial weights)", "",
                      "| implementation | median | CPU time |", "|---|---|---|"]
            for name, row in r["results"].items():
                lines.append(f"| {name} | {fmt(row['median_s'])} | {fmt(row['cpu_median_s'])} |")
            lines += [f"\nfewshot is **{r['fewshot_speedup']:.2f}×** faster than easyfsl.", ""]
    if "memory" in results:
        m = results["memory"]
        lines += ["**Peak memory of one second-order meta-iteration** (RSS growth of a fresh process, 5-way 1-shot, "
                  "5 steps)", "", "| implementation | MiB |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in m["meta_iteration_5w1s_5_steps_mib"].items()]
        lines += ["", "**fewshot, 20-way 5-shot, as inner steps grow** (MiB)", "",
                  "| inner steps | default | checkpoint_inner |", "|---|---|---|"]
        for s, row in m["fewshot_vs_inner_steps_mib"]["20-way 5-shot"].items():
            lines.append(f"| {s} | {row['default']:.0f} | {row['checkpoint_inner']:.0f} |")
        lines += ["", f"checkpoint_inner costs ×{m['checkpoint_time_ratio']:.2f} time (20-way 5-shot, 5 steps).", ""]
    if "floor" in results:
        f = results["floor"]
        lines += [f"**Compute floor**: fp32 matrix products reach {f['gemm']['peak_gflops']:.0f} GFLOP/s here "
                  f"({f['gemm']['threads']} threads); floor = counted FLOPs of matrix products and convolutions / "
                  "that rate", "", "| benchmark | implementation | GFLOP | floor | measured | measured / floor |",
                  "|---|---|---|---|---|---|"]
        for key, rows in f["flops"].items():
            if key == "demo_maml_inner_step":
                measured = {"fewshot": results.get("demo", {}).get("maml_inner_step", {}).get("median_s")}
            else:
                measured = {name: row["median_s"] for name, row in (results.get(key) or {}).get("results", {}).items()}
                if key.startswith("protonet"):
                    measured = {"fewshot": measured.get("fewshot")}
            for name, row in rows.items():
                m = measured.get(name)
                lines.append(f"| {key.replace('_', ' ')} | {name} | {row['gflop']:.2f} | {fmt(row['floor_s'])} | "
                             + (f"{fmt(m)} | {m / row['floor_s']:.1f} |" if m else "— | — |"))
        for key, ours in (("maml_second_order", "fewshot, per-task loop"), ("maml_first_order", "fewshot, per-task loop"),
                          ("protonet_5w5s", "fewshot"), ("protonet_60w5s", "fewshot")):
            r, rows = results.get(key), f["flops"].get(key, {})
            if not r or ours not in rows:
                continue
            peers = {n: row["median_s"] for n, row in r["results"].items() if not n.startswith("fewshot")
                     and not n.startswith("plain")}
            best = ", ".join(f"{n}: {t / rows[ours]['floor_s']:.1f}×" for n, t in peers.items())
            lines.append(f"\n{key.replace('_', ' ')}: the most fewshot could be faster at the GEMM peak, same FLOPs: {best}")
        if "imports" in f:
            i = f["imports"]
            lines.append(f"\nImports in a fresh interpreter: streamlit {fmt(i['streamlit'])}, torch {fmt(i['torch'])}: "
                         f"{fmt(i['sum_s'])} before the app can answer with a model.")
        lines.append("")
    if "demo" in results:
        lines += ["**Demo on CPU**", "", "| what | measured | target |", "|---|---|---|"]
        for k, row in results["demo"].items():
            if "median_s" in row:
                lines.append(f"| {k.replace('_', ' ')} | {fmt(row['median_s'])} | ≤ {fmt(row['target_s'])} |")
                if "functional_call_nchw_median_s" in row:
                    lines.append(f"| (same step through functional_call, NCHW) | "
                                 f"{fmt(row['functional_call_nchw_median_s'])} ({row['speedup']:.2f}× slower) | |")
            elif "health_s" in row:
                lines.append(f"| {k.replace('_', ' ')} (health endpoint only) | {fmt(row['health_s'])} | "
                             f"≤ {fmt(row['target_s'])} |")
        lines.append("")
    if "app_ready_ab" in results:
        ab = results["app_ready_ab"]
        if "medians" in ab:
            lines += [f"**App start, two checkouts alternated** ({ab['rounds']} runs each; medians)", "",
                      "| checkout | ready | home text | health | server CPU until ready | Build a task | Classify |",
                      "|---|---|---|---|---|---|---|"]
            for key in ("other", "this"):
                m = ab["medians"][key]
                lines.append(f"| {key}: {ab[key]} | {fmt(m['median_s'])} | {fmt(m['home_text_s'])} | "
                             f"{fmt(m['health_s'])} | {fmt(m['server_cpu_s'])} | {fmt(m['build_s'])} | "
                             f"{fmt(m['classify_s'])} |")
            lines += ["", f"other / this: {ab['ratio_other_over_this']:.2f}", ""]
        else:
            lines += [f"App start A/B: {ab.get('error', ab)}", ""]
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"Python {platform.python_version()}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--only", default="maml,protonet,memory,demo")
    p.add_argument("--json", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--nchw", action="store_true", help="run fewshot's models in the default memory format")
    p.add_argument("--compare-with", default=None, metavar="DIR",
                   help="with --only app-ab: another checkout whose app start is timed alternately with this one's")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--inner-steps", type=int, default=INNER_STEPS, help=argparse.SUPPRESS)
    p.add_argument("--n-way", type=int, default=N_WAY, help=argparse.SUPPRESS)
    p.add_argument("--n-shot", type=int, default=N_SHOT, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint-inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    global CHANNELS_LAST
    CHANNELS_LAST = not args.nchw
    if args.memory_child:
        memory_child(args.memory_child, args.inner_steps, args.checkpoint_inner, args.n_way, args.n_shot)
        return 0
    rounds = args.rounds or (3 if args.quick else 15)
    only = set(args.only.split(","))
    results: dict = {"machine": machine(), "command": " ".join(["python"] + sys.argv)}
    if "maml" in only:
        results["maml_second_order"] = bench_maml(rounds, first_order=False)
        results["maml_first_order"] = bench_maml(rounds, first_order=True)
    if "maml-profile" in only:
        results["maml_profile"] = profile_maml()
    if "protonet" in only:
        results["protonet_5w5s"] = bench_protonet(rounds, 5, 5, 15)
        results["protonet_60w5s"] = bench_protonet(max(3, rounds // 3), 60, 5, 5)
    if "memory" in only:
        results["memory"] = bench_memory(args.quick)
    if "demo" in only:
        results["demo"] = bench_demo(args.quick)
    elif "demo-maml" in only:  # the inner step alone, without starting the app
        results["demo"] = {"maml_inner_step": bench_demo_maml(args.quick)}
    if "floor" in only:
        results["floor"] = bench_floor(rounds)
    if "app-ab" in only:
        if not args.compare_with:
            p.error("--only app-ab needs --compare-with DIR (e.g. git worktree add /tmp/old <commit>)")
        results["app_ready_ab"] = app_ready_ab(Path(args.compare_with), args.rounds or 4)
    text = report(results)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**results, "table": text}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
