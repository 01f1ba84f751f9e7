"""t-SNE maps: fewshot's ``tsne_2d`` (exact gradient in torch) beside the scikit-learn call it replaced (issue 5).

    python benchmarks/tsne_speed.py [--rounds 3] [--threads 1] [--json benchmarks/results/tsne.json]

Both paths map the same points in one run, interleaved (round r runs each once); the table gives median
wall and CPU seconds and their ratio. The old path is exactly what ``tsne_2d`` did before: scikit-learn's
Barnes-Hut ``TSNE(perplexity=30, init="pca", learning_rate="auto", random_state=0)``, 1000 iterations.

Data: ``random``: 1000 points from N(0, 1) in 64-d (what ``speed.py``'s demo section maps);
``omniglot``: 1000 drawings (50 characters x 20) of the Lake evaluation alphabets embedded by the shipped
``checkpoints/lake/protonet.safetensors`` (needs ``FEWSHOT_DATA_DIR`` or ``--data-dir``); ``small``: 50
of those (5 characters x 10), the size the app usually maps.

Quality of every map (the first round's; both paths are deterministic):
* ``kl``: KL(P || Q) with the exact Student-t Q and the same P (scikit-learn's nearest-neighbour
  affinities, which both paths use), so the two numbers are the same objective;
* ``trust``: ``sklearn.manifold.trustworthiness`` with 10 neighbours;
* ``knn_acc``: leave-one-out 5-nearest-neighbour accuracy of the character labels in the 2-D map (the
  same measure in the 64-d features is printed for reference).

``--opentsne`` adds openTSNE (Barnes-Hut and FFT gradients) when it is importable; it is not a
dependency of fewshot. ``--threads`` limits torch and scikit-learn/OpenMP alike (default 1: on a shared
machine one thread each compares the work done, not who got the cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fewshot import tsne_2d  # noqa: E402
from fewshot.embedding import _as_points, _joint_probabilities, _kl_divergence  # noqa: E402


def old_tsne_2d(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """``tsne_2d`` as it was before this change (scikit-learn's Barnes-Hut t-SNE, 1000 iterations)."""
    from sklearn.manifold import TSNE

    n = features.shape[0]
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca", learning_rate="auto")
    return tsne.fit_transform(features).astype(np.float32)


def opentsne_candidates() -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    try:
        import openTSNE
    except ImportError:
        print("openTSNE is not importable; skipped", file=sys.stderr)
        return {}

    def run(method: str) -> Callable[[np.ndarray], np.ndarray]:
        def fit(x: np.ndarray) -> np.ndarray:
            perplexity = float(min(30.0, max(1.0, (x.shape[0] - 1) / 3.0)))
            tsne = openTSNE.TSNE(perplexity=perplexity, random_state=0, n_jobs=1, negative_gradient_method=method)
            return np.asarray(tsne.fit(x), dtype=np.float32)
        return fit
    return {f"openTSNE {openTSNE.__version__} bh": run("bh"), f"openTSNE {openTSNE.__version__} fft": run("fft")}


def omniglot_features(data_dir: str, n_classes: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    from fewshot import extract_features, load_checkpoint
    from fewshot.omniglot import load_omniglot

    dataset = load_omniglot("lake", "test", data_dir=data_dir)
    labels = np.asarray(dataset.get_labels())
    classes = np.random.default_rng(0).choice(labels.max() + 1, n_classes, replace=False)
    idx = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in classes])
    model = load_checkpoint(ROOT / "checkpoints" / "lake" / "protonet.safetensors")[0]
    feats = extract_features(model.backbone, dataset.get_images(torch.from_numpy(idx))).numpy()
    return feats, labels[idx]


def knn_accuracy(points: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy (majority vote, ties to the nearest label)."""
    from sklearn.neighbors import NearestNeighbors

    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    correct = 0
    for i, row in enumerate(labels[idx[:, 1:]]):  # column 0 is the point itself (unless it has duplicates)
        row = list(row)
        correct += max(row, key=lambda label: (row.count(label), -row.index(label))) == labels[i]
    return correct / len(labels)


def quality(features: np.ndarray, labels: np.ndarray | None, xy: np.ndarray, perplexity: float) -> dict:
    from sklearn.manifold import trustworthiness

    n = features.shape[0]
    P = _joint_probabilities(_as_points(features), float(min(perplexity, max(1.0, (n - 1) / 3.0))))
    out = {"kl": _kl_divergence(P, torch.from_numpy(xy)),
           "trust": float(trustworthiness(features, xy, n_neighbors=min(10, n // 2 - 1)))}
    if labels is not None:
        out["knn_acc"] = knn_accuracy(xy, labels)
    return out


def bench(name: str, features: np.ndarray, labels: np.ndarray | None, paths: dict, rounds: int) -> dict:
    wall: dict[str, list[float]] = {k: [] for k in paths}
    cpu: dict[str, list[float]] = {k: [] for k in paths}
    maps: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for key, fit in paths.items():
            w, c = time.perf_counter(), time.process_time()
            xy = fit(features)
            wall[key].append(time.perf_counter() - w)
            cpu[key].append(time.process_time() - c)
            if key in maps:
                assert np.array_equal(maps[key], xy), f"{key} is not deterministic"
            maps[key] = xy
    out: dict = {"points": int(features.shape[0]), "dims": int(features.shape[1]), "paths": {}}
    for key in paths:
        out["paths"][key] = {"wall_s": statistics.median(wall[key]), "cpu_s": statistics.median(cpu[key]),
                             **quality(features, labels, maps[key], 30.0)}
    old, new = out["paths"]["scikit-learn (old)"], out["paths"]["fewshot (new)"]
    out["speedup_wall"] = old["wall_s"] / new["wall_s"]
    out["speedup_cpu"] = old["cpu_s"] / new["cpu_s"]
    if labels is not None:
        out["knn_acc_features"] = knn_accuracy(features, labels)
    print(f"  {name}: {out['speedup_wall']:.2f}x wall, {out['speedup_cpu']:.2f}x CPU", file=sys.stderr, flush=True)
    return out


def report(results: dict) -> str:
    lines = [f"t-SNE, {results['machine']}; {results['command']}", "",
             "| data | N | path | wall s | CPU s | KL | trust | 5-NN acc |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results["data"].items():
        for key, p in r["paths"].items():
            acc = f"{p['knn_acc']:.3f}" if "knn_acc" in p else "-"
            lines.append(f"| {name} | {r['points']} | {key} | {p['wall_s']:.2f} | {p['cpu_s']:.2f} | {p['kl']:.4f} | "
                         f"{p['trust']:.4f} | {acc} |")
    lines.append("")
    for name, r in results["data"].items():
        extra = (f"; 5-NN acc in the {r['dims']}-d features {r['knn_acc_features']:.3f}"
                 if "knn_acc_features" in r else "")
        lines.append(f"{name}: new/old speed-up {r['speedup_wall']:.2f}x wall, {r['speedup_cpu']:.2f}x CPU{extra}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch and OpenMP/BLAS threads for every path")
    p.add_argument("--data-dir", default=os.environ.get("FEWSHOT_DATA_DIR"))
    p.add_argument("--opentsne", action="store_true", help="add openTSNE's BH and FFT t-SNE when importable")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # scikit-learn's Barnes-Hut runs on OpenMP threads
    warnings.filterwarnings("ignore", category=FutureWarning)
    paths: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "scikit-learn (old)": old_tsne_2d,
        "fewshot (new)": lambda x: tsne_2d(x),
    }
    if args.opentsne:
        paths.update(opentsne_candidates())
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, " \
              f"{args.threads} thread(s), Python {platform.python_version()}"
    results: dict = {"machine": machine, "command": " ".join(["python"] + sys.argv), "data": {}}
    rand = torch.randn(1000, 64, generator=torch.Generator().manual_seed(0)).numpy()
    results["data"]["random"] = bench("random", rand, None, paths, args.rounds)
    if args.data_dir:
        feats, labels = omniglot_features(args.data_dir, 50, 20)
        results["data"]["omniglot"] = bench("omniglot", feats, labels, paths, args.rounds)
        small = np.concatenate([np.flatnonzero(labels == c)[:10] for c in np.unique(labels)[:5]])
        results["data"]["small"] = bench("small", feats[small], labels[small], paths, args.rounds)
    else:
        print("no FEWSHOT_DATA_DIR / --data-dir: the Omniglot rows are skipped", file=sys.stderr)
    text = report(results)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**results, "table": text}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
