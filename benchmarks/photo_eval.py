"""Photo mode on an offline evaluation set: emoji drawn by three vendors (each emoji a class, each vendor a shot).

    python benchmarks/fetch_emoji.py                       # once: npm pack -> .data/emoji (git-ignored)
    python benchmarks/photo_eval.py [--episodes 1000] [--max-classes 600] [--image-size 160] [--json OUT]
    python benchmarks/photo_eval.py --latency              # the extractor's speed at 160 and 224 px, 1 thread

Classes are the emoji present in all three sets (Noto, Twemoji, Fluent Emoji Flat), matched by their
code points, without the skin-tone variants (near-copies of their base emoji); ``--max-classes`` of
them are drawn with a fixed seed. Every SVG is rendered with cairosvg to a PNG (cached in
``.data/emoji/png``) and goes through the app's photo path (``PhotoFeatureExtractor``). An episode is
5-way K-shot: K vendors' drawings of each class are the support set and the remaining 3 - K are the
queries (so K is 1 or 2). Each photo method is evaluated on the same episodes (``--seed``) with the
ImageNet-pretrained EfficientNet-Lite0 and, as the control, with the same network at random weights
(whose features are rescaled by one global factor to the pretrained features' mean norm).
Prints a Markdown table (mean accuracy % ± 95% CI over the episodes).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fewshot import METHOD_TITLES, Task, evaluate  # noqa: E402
from fewshot.photo import PHOTO_METHODS, PhotoFeatureExtractor, build_photo_model  # noqa: E402

VENDORS = ("noto", "twemoji", "fluent")
SKIN_TONES = {"1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"}
RENDER_SIZE = 224


def icon_svg(icons: dict, name: str) -> str | None:
    """An Iconify icon as a standalone SVG; ``None`` for aliases that transform their parent (flips, rotations)."""
    default_w, default_h = icons.get("width", 16), icons.get("height", 16)
    alias = icons.get("aliases", {}).get(name)
    if alias is not None:
        if set(alias) - {"parent"}:
            return None
        name = alias["parent"]
    icon = icons["icons"].get(name)
    if icon is None:
        return None
    left, top = icon.get("left", 0), icon.get("top", 0)
    width, height = icon.get("width", default_w), icon.get("height", default_h)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{left} {top} {width} {height}">{icon["body"]}</svg>')


def emoji_classes(data: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Code-point keys common to all vendors (no skin tones), and vendor -> key -> SVG."""
    svgs: dict[str, dict[str, str]] = {}
    for vendor in VENDORS:
        folder = data / vendor
        if not (folder / "icons.json").is_file():
            raise SystemExit(f"error: {folder}/icons.json is missing; run python benchmarks/fetch_emoji.py first")
        icons = json.loads((folder / "icons.json").read_text())
        chars = json.loads((folder / "chars.json").read_text())
        svgs[vendor] = {}
        for key, name in chars.items():
            if SKIN_TONES & set(key.split("-")):
                continue
            svg = icon_svg(icons, name)
            if svg is not None:
                svgs[vendor][key] = svg
    common = sorted(set.intersection(*(set(v) for v in svgs.values())))
    return common, svgs


def render(data: Path, vendor: str, key: str, svg: str) -> bytes:
    """The SVG as a ``RENDER_SIZE`` PNG with a transparent background (cached on disk)."""
    path = data / "png" / vendor / f"{key}.png"
    if path.is_file():
        return path.read_bytes()
    import cairosvg

    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=RENDER_SIZE, output_height=RENDER_SIZE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return png


def emoji_features(data: Path, keys: list[str], svgs: dict, *, pretrained: bool, image_size: int) -> torch.Tensor:
    """Features ``(n_classes, n_vendors, 1280)`` (cached in ``.data/emoji/features``)."""
    tag = f"{'imagenet' if pretrained else 'random'}-{image_size}-{len(keys)}"
    path = data / "features" / f"{tag}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved["keys"] == keys:
            return saved["features"]
    extractor = PhotoFeatureExtractor(pretrained=pretrained, image_size=image_size, cache_size=0)
    out = torch.zeros(len(keys), len(VENDORS), 1280)
    start = time.perf_counter()
    for v, vendor in enumerate(VENDORS):
        pngs = [render(data, vendor, key, svgs[vendor][key]) for key in keys]
        for i in range(0, len(pngs), 64):
            out[i : i + 64, v] = extractor.features(pngs[i : i + 64])
    seconds = time.perf_counter() - start
    print(f"features {tag}: {out.shape[0] * out.shape[1]} images in {seconds:.0f} s", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"keys": keys, "features": out}, path)
    return out


def episodes(features: torch.Tensor, *, n_way: int, n_shot: int, n_episodes: int, seed: int) -> list[Task]:
    """``n_episodes`` tasks: ``n_shot`` random vendors per class in the support set, the other vendors as queries."""
    g = torch.Generator().manual_seed(seed)
    n_classes, n_vendors, _ = features.shape
    tasks = []
    for _ in range(n_episodes):
        classes = torch.randperm(n_classes, generator=g)[:n_way]
        support, query = [], []
        for c in classes:
            order = torch.randperm(n_vendors, generator=g)
            support.append(features[c, order[:n_shot]])
            query.append(features[c, order[n_shot:]])
        n_query = n_vendors - n_shot
        tasks.append(Task(torch.cat(support), torch.arange(n_way).repeat_interleave(n_shot),
                          torch.cat(query), torch.arange(n_way).repeat_interleave(n_query), classes))
    return tasks


def latency(sizes: list[int], n_images: int = 32) -> None:
    """Print the extractor's load time and ms per photo (first pass, then from the cache), one thread."""
    from fewshot.photo import SYNTHETIC_OBJECTS, synthetic_photo

    photos = [synthetic_photo(SYNTHETIC_OBJECTS[i % 5], i, size=640) for i in range(n_images)]
    print("| image size | load (s) | first pass (ms / photo) | cached (ms / photo) |\n|---|---|---|---|")
    for size in sizes:
        start = time.perf_counter()
        extractor = PhotoFeatureExtractor(image_size=size).load()
        loaded = time.perf_counter() - start
        extractor.features(photos[:2])  # warm-up
        extractor.clear_cache()
        start = time.perf_counter()
        extractor.features(photos)
        first = (time.perf_counter() - start) / n_images
        start = time.perf_counter()
        extractor.features(photos)
        cached = (time.perf_counter() - start) / n_images
        print(f"| {size} | {loaded:.2f} | {1000 * first:.0f} | {1000 * cached:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / ".data" / "emoji")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--n-way", type=int, default=5)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-classes", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--methods", nargs="+", default=list(PHOTO_METHODS), choices=PHOTO_METHODS)
    parser.add_argument("--inner-lr", type=float, default=None, help="photo MAML's inner lr (default: the library's)")
    parser.add_argument("--class-offset", type=int, default=0,
                        help="skip this many classes of the seeded order first (a disjoint set for tuning)")
    parser.add_argument("--no-control", action="store_true", help="skip the random-weights control")
    parser.add_argument("--control-only", action="store_true", help="only the random-weights control")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--latency", action="store_true",
                        help="only time the extractor on 32 generated 640x640 photos at 160 and 224 px")
    args = parser.parse_args(argv)
    if args.latency:
        torch.set_num_threads(1)
        latency([160, 224])
        return 0
    if any(not 1 <= k < len(VENDORS) for k in args.shots):
        raise SystemExit(f"error: --shots must be between 1 and {len(VENDORS) - 1} (the other vendors are the queries)")
    torch.set_num_threads(1)

    common, svgs = emoji_classes(args.data)
    order = random.Random(args.seed).sample(common, len(common))
    keys = sorted(order[args.class_offset : args.class_offset + args.max_classes])
    print(f"{len(common)} emoji in all three sets (no skin tones); using {len(keys)}", file=sys.stderr)
    rows, results = [], []
    imagenet = emoji_features(args.data, keys, svgs, pretrained=True, image_size=args.image_size)
    runs = (False,) if args.control_only else (True,) if args.no_control else (True, False)
    for pretrained in runs:
        features = imagenet
        weights = "ImageNet"
        if not pretrained:
            # A random EfficientNet's features are ~1e-6 in norm (activations shrink layer by layer); one global
            # factor gives them the pretrained features' mean norm, so the heads' learning rates mean the same
            # thing. ProtoNet and Matching are unaffected (argmax of distances / cosines is scale-free).
            features = emoji_features(args.data, keys, svgs, pretrained=False, image_size=args.image_size)
            features = features * (imagenet.norm(dim=2).mean() / features.norm(dim=2).mean())
            weights = "random (control)"
        for method in args.methods:
            cells = []
            for k in args.shots:
                extra = {"inner_lr": args.inner_lr} if args.inner_lr is not None and "maml" in method else {}
                model = build_photo_model(method, **extra)
                tasks = episodes(features, n_way=args.n_way, n_shot=k, n_episodes=args.episodes, seed=args.seed)
                result = evaluate(model, tasks)
                results.append({"method": method, "weights": weights, "n_way": args.n_way, "n_shot": k,
                                "accuracy": result.accuracy, "ci95": result.ci95, "episodes": result.episodes,
                                "classes": len(keys), "image_size": args.image_size, "seed": args.seed})
                cells.append(f"{100 * result.accuracy:.1f} ± {100 * result.ci95:.1f}")
            rows.append(f"| {METHOD_TITLES[method]} (`{method}`) | {weights} | " + " | ".join(cells) + " |")
            print(rows[-1], file=sys.stderr)
    header = "| method | EfficientNet-Lite0 weights | " + " | ".join(
        f"{args.n_way}-way {k}-shot" for k in args.shots) + " |"
    print("\n".join([header, "|---|---|" + "---|" * len(args.shots), *rows]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
