"""t-SNE maps: fewshot's ``tsne_2d`` beside openTSNE (issue 17) and the scikit-learn call it replaced (issue 5).

    python benchmarks/tsne_speed.py [--sizes 50 250 1000 2500] [--rounds 2] [--threads 1] [--sklearn]
                                    [--json benchmarks/results/tsne-opentsne.json]

Every path maps the same points in one run, interleaved (round r runs each once); the table gives median wall and
CPU seconds (``time.process_time``: the CPU the process used, the fair figure on a shared machine) and each path's
CPU time relative to fewshot's. Paths:
* ``fewshot``: ``fewshot.tsne_2d`` as it is in this checkout;
* ``torch exact``: fewshot's hand-written torch t-SNE (exact gradient, scikit-learn's affinities and optimiser)
  called directly (``fewshot.embedding._tsne_exact``): the path ``tsne_2d`` takes up to 2,500 points, named
  separately so that the comparison can be re-made if ``tsne_2d`` changes;
* ``openTSNE fft`` / ``openTSNE bh``: ``openTSNE.TSNE`` with its defaults (250 exaggerated + 500 iterations, PCA
  initialisation, learning rate N/12) and the FFT-interpolated or Barnes-Hut gradient, ``n_jobs=1``;
* ``scikit-learn`` (``--sklearn``): ``sklearn.manifold.TSNE(init="pca", learning_rate="auto")``, Barnes-Hut, 1000
  iterations (what ``tsne_2d`` was before issue 5).

Data: drawings of the Lake evaluation alphabets (never seen in training; N/20 characters x 20 drawings, or N/10 x 10
when N is not a multiple of 20: 50 points are 5 characters x 10, about what the app maps for a task) embedded by
the shipped ``checkpoints/lake/protonet.safetensors`` (64-d), at the sizes the app maps (``--sizes``; needs
``FEWSHOT_DATA_DIR`` or ``--data-dir``). Without the data: N(0, 1) points in 64-d, no labels.

Quality of every map (the first round's; every path is checked deterministic across rounds):
* ``kl``: KL(P || Q) with the exact Student-t Q and the same P for every path (perplexity-30 affinities over the
  3 x perplexity nearest neighbours, as scikit-learn and openTSNE both define them), so it is the same objective;
* ``trust``: ``sklearn.manifold.trustworthiness`` with 10 neighbours;
* ``knn_acc``: leave-one-out 5-nearest-neighbour accuracy of the character labels in the 2-D map (the same measure
  in the 64-d features is given for reference).

openTSNE is needed only here (``pip install openTSNE==1.0.4``). ``--threads`` limits torch and OpenMP/BLAS alike
(default 1: on a shared machine one thread each compares the work done, not who got the cores).
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
from fewshot.embedding import _as_points, _joint_probabilities, _kl_divergence, _tsne_exact  # noqa: E402


def _perplexity(n: int, perplexity: float = 30.0) -> float:
    return float(min(perplexity, max(1.0, (n - 1) / 3.0)))


def sklearn_tsne_2d(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """``tsne_2d`` as it was before issue 5 (scikit-learn's Barnes-Hut t-SNE, 1000 iterations)."""
    from sklearn.manifold import TSNE

    tsne = TSNE(n_components=2, perplexity=_perplexity(features.shape[0], perplexity), random_state=seed, init="pca",
                learning_rate="auto")
    return tsne.fit_transform(features).astype(np.float32)


def torch_exact_2d(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """The hand-written torch t-SNE with the exact gradient (``tsne_2d`` up to 2,500 points before issue 17)."""
    with torch.no_grad():
        return _tsne_exact(_as_points(features), _perplexity(features.shape[0], perplexity), seed)[0].numpy()


def opentsne_2d(method: str) -> Callable[[np.ndarray], np.ndarray]:
    import openTSNE

    def fit(features: np.ndarray) -> np.ndarray:
        tsne = openTSNE.TSNE(perplexity=_perplexity(features.shape[0]), random_state=0, n_jobs=1,
                             negative_gradient_method=method)
        return np.asarray(tsne.fit(features.astype(np.float64)), dtype=np.float32)
    return fit


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


def quality(features: np.ndarray, labels: np.ndarray | None, xy: np.ndarray) -> dict:
    from sklearn.manifold import trustworthiness

    n = features.shape[0]
    P = _joint_probabilities(_as_points(features), _perplexity(n))
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
    base = statistics.median(cpu["fewshot"])
    for key in paths:
        out["paths"][key] = {"wall_s": statistics.median(wall[key]), "cpu_s": statistics.median(cpu[key]),
                             "cpu_vs_fewshot": statistics.median(cpu[key]) / base, **quality(features, labels, maps[key])}
    if labels is not None:
        out["knn_acc_features"] = knn_accuracy(features, labels)
    print(f"  {name}: " + ", ".join(f"{k} {v['cpu_s']:.2f} CPU s" for k, v in out["paths"].items()),
          file=sys.stderr, flush=True)
    return out


def report(results: dict) -> str:
    lines = [f"t-SNE, {results['machine']}; {results['command']}", "",
             "| data | N | path | wall s | CPU s | CPU vs fewshot | KL | trust | 5-NN acc |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["data"].items():
        for key, p in r["paths"].items():
            acc = f"{p['knn_acc']:.3f}" if "knn_acc" in p else "-"
            lines.append(f"| {name} | {r['points']} | {key} | {p['wall_s']:.2f} | {p['cpu_s']:.2f} | "
                         f"{p['cpu_vs_fewshot']:.2f} | {p['kl']:.4f} | {p['trust']:.4f} | {acc} |")
    lines.append("")
    for name, r in results["data"].items():
        if "knn_acc_features" in r:
            lines.append(f"{name}: 5-NN acc in the {r['dims']}-d features {r['knn_acc_features']:.3f}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 250, 1000, 2500], help="points per map (multiples of 10)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch and OpenMP/BLAS threads for every path")
    p.add_argument("--data-dir", default=os.environ.get("FEWSHOT_DATA_DIR"))
    p.add_argument("--sklearn", action="store_true", help="add scikit-learn's Barnes-Hut t-SNE (1000 iterations)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    from threadpoolctl import threadpool_limits

    try:
        import openTSNE
    except ImportError:
        p.error("openTSNE is not installed (it is not a dependency of fewshot): pip install openTSNE==1.0.4")

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    paths: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "fewshot": lambda x: tsne_2d(x),
        "torch exact": torch_exact_2d,
        "openTSNE fft": opentsne_2d("fft"),
        "openTSNE bh": opentsne_2d("bh"),
    }
    if args.sklearn:
        paths["scikit-learn"] = sklearn_tsne_2d
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"openTSNE {openTSNE.__version__}, {args.threads} thread(s), Python {platform.python_version()}")
    results: dict = {"machine": machine, "command": " ".join(["python"] + sys.argv), "data": {}}
    if args.data_dir:
        feats, labels = omniglot_features(args.data_dir, max(args.sizes) // 10, 20)
        for n in sorted(args.sizes):
            per = 20 if n % 20 == 0 else 10  # 50 points: 5 characters x 10 drawings; 1000: 50 x 20
            chars = list(dict.fromkeys(labels))[: n // per]  # characters in the order they were drawn
            keep = np.concatenate([np.flatnonzero(labels == c)[:per] for c in chars])
            results["data"][f"omniglot-{n}"] = bench(f"omniglot-{n}", feats[keep], labels[keep], paths, args.rounds)
    else:
        print("no FEWSHOT_DATA_DIR / --data-dir: random points instead of Omniglot", file=sys.stderr)
        for n in sorted(args.sizes):
            rand = torch.randn(n, 64, generator=torch.Generator().manual_seed(0)).numpy()
            results["data"][f"random-{n}"] = bench(f"random-{n}", rand, None, paths, args.rounds)
    text = report(results)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**results, "table": text}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
