"""Would Winograd convolutions make MAML's Conv-4 faster on a CPU? A probe, not a fast path.

Issue 5's 3x CPU targets sit above the compute floor of the direct convolution (``speed.py --only floor``):
every implementation runs the same convolutions. Winograd F(2x2, 3x3) needs 2.25x fewer multiplications for a
3x3 convolution. This script writes it out of plain tensor operations (tile, transform, one batched matrix
product per transformed position, inverse transform), so autograd gives its gradient and its gradient's gradient
(what second-order MAML needs), and times it against ``F.conv2d`` in ``channels_last`` (what fewshot runs) on the
shapes of MAML's Conv-4 (64 channels; 14x14 is block 2, three quarters of the FLOPs; 6x6 is block 3 padded to even).

    python benchmarks/winograd_probe.py --threads 2 --json benchmarks/results/winograd_probe.json

For each shape it reports the largest difference from ``F.conv2d`` relative to the output's largest value, and
median times of the forward pass, forward + backward, and forward + backward + double backward, both
implementations interleaved in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

# Lavin & Gray 2016, F(2x2, 3x3): Y = A^T [(G g G^T) * (B^T d B)] A
BT = torch.tensor([[1.0, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
G = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
AT = torch.tensor([[1.0, 1, 1, 0], [0, 1, -1, -1]])
BB = torch.einsum("ai,bj->abij", BT, BT).reshape(16, 16)  # transformed position p=(a,b) <- tile pixel (i,j)
GG = torch.einsum("ak,bl->abkl", G, G).reshape(16, 9)  # p <- kernel tap (k,l)
AA = torch.einsum("qa,rb->abqr", AT, AT).reshape(16, 4)  # p -> output pixel (q,r)


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for even H and W, by Winograd F(2x2, 3x3)."""
    n, c, h, w = x.shape
    th, tw = h // 2, w // 2
    d = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1).unfold(1, 4, 2).unfold(2, 4, 2)  # (N, th, tw, C, 4, 4)
    v = (d.reshape(-1, 16) @ BB.t()).view(n * th * tw, c, 16).permute(2, 0, 1)  # (16, tiles, C)
    u = (GG @ weight.reshape(weight.shape[0], c, 9).permute(2, 1, 0).reshape(9, -1)).view(16, c, -1)  # (16, C, O)
    m = torch.bmm(v, u)  # (16, tiles, O): the only matrix product, 16/36 of the direct one's multiplications
    y = (m.permute(1, 2, 0).reshape(-1, 16) @ AA).view(n, th, tw, -1, 2, 2)
    y = y.permute(0, 1, 4, 2, 5, 3).reshape(n, h, w, -1) + bias
    return y.permute(0, 3, 1, 2)  # (N, O, H, W) with channels_last strides


def direct_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, weight, bias, padding=1)


def timed(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def probe(n: int, size: int, rounds: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 64, size, size, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = (0.1 * torch.randn(64, 64, 3, 3, generator=g)).contiguous(memory_format=torch.channels_last).requires_grad_()
    b = torch.randn(64, generator=g).requires_grad_()
    with torch.no_grad():
        ref = direct_conv3x3(x, w, b)
        err = ((winograd_conv3x3(x, w, b) - ref).abs().max() / ref.abs().max()).item()

    def forward(conv):
        return lambda: conv(x, w, b)

    def backward(conv):
        def run():
            y = conv(x, w, b)
            torch.autograd.grad((y * y).sum(), (x, w))
        return run

    def double_backward(conv):
        def run():
            y = conv(x, w, b)
            gx, gw = torch.autograd.grad((y * y).sum(), (x, w), create_graph=True)
            torch.autograd.grad((gx * gx).sum() + (gw * gw).sum(), (x, w))
        return run

    row = {"batch": n, "size": size, "max_rel_difference": err}
    for name, make in (("forward", forward), ("forward_backward", backward), ("double_backward", double_backward)):
        fns = {"direct": make(direct_conv3x3), "winograd": make(winograd_conv3x3)}
        for fn in fns.values():
            fn()  # warm-up
        times = {k: [] for k in fns}
        for _ in range(rounds):  # interleaved, so both see the same machine
            for k, fn in fns.items():
                times[k] += timed(fn, 1)
        med = {k: statistics.median(v) for k, v in times.items()}
        row[name] = {"direct_ms": 1e3 * med["direct"], "winograd_ms": 1e3 * med["winograd"],
                     "winograd_over_direct": med["winograd"] / med["direct"]}
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # batch 5: the app's 5-way 1-shot support set; 80: a meta-iteration's support + queries (5 + 75)
    rows = [probe(n, s, args.rounds) for n, s in ((5, 14), (80, 14), (5, 6), (80, 6))]
    print(f"threads: {args.threads}; times are medians of {args.rounds} interleaved rounds (ms); "
          "ratio > 1: Winograd is slower")
    print("| batch | size | max rel. diff | forward | fwd + bwd | fwd + bwd + double bwd |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[k]['direct_ms']:.2f} vs {r[k]['winograd_ms']:.2f} (x{r[k]['winograd_over_direct']:.2f})"
                 for k in ("forward", "forward_backward", "double_backward")]
        print(f"| {r['batch']} | {r['size']}x{r['size']} | {r['max_rel_difference']:.1e} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "rounds": args.rounds, "torch": torch.__version__, "rows": rows}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
