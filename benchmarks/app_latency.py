"""How fast the app answers: one classification of a 5-way task per method, and one MAML inner step.

    python benchmarks/app_latency.py [--checkpoint-dir checkpoints] [--device cpu] [--repeats 20]

Uses the app's own code path (the lab's cached model and task tensors, then ``fewshot.inspection.predict``: a
private copy of the model, ``process_support_set`` and a forward pass; ``inspection.adaptation`` with each step's
probabilities and layer changes, as the MAML page shows them: the functional inner loop), on the
built-in synthetic 5-way 1-shot task (circle, cross, triangle, square, bar; 5 queries). Prints medians and how
many of the 5 redrawn symbols each checkpoint gets right. Issue 4 asks for well under a second on a CPU.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", default=str(ROOT / "checkpoints"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the app uses FEWSHOT_TORCH_THREADS, "
                        "default 1)")
    args = parser.parse_args()
    os.environ["FEWSHOT_CHECKPOINT_DIR"] = args.checkpoint_dir
    logging.getLogger("streamlit").setLevel(logging.ERROR)  # "no runtime" notices outside `streamlit run`

    import streamlit as st
    import torch

    from fewshot import inspection
    from fewshot.symbols import synthetic_task
    from pages.lab import checkpoints
    from pages.lab.task import Example, TaskView

    torch.set_num_threads(args.threads)
    st.session_state["device"] = args.device
    example = synthetic_task(5, 1, 1)
    view = TaskView(example.names,
                    [[Example(f"s{c}", name, pngs[0], "example")] for c, (name, pngs) in
                     enumerate(zip(example.names, example.support))],
                    [Example(f"q{j}", f"query {j + 1}", png, "example") for j, (png, _) in enumerate(example.queries)],
                    [c for _, c in example.queries])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"checkpoints {args.checkpoint_dir}")
    print(f"{'method':<44} {'1 query ms':>10} {'5 queries ms':>12} {'right':>6}")
    for method in checkpoints.available_methods():
        loaded = checkpoints.get_model(method)
        sx, sy, qx = view.tensors(loaded.image_size)
        inspection.predict(loaded.model, sx, sy, qx)  # warm-up
        times = {}
        for n in (1, 5):
            runs = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                probs = inspection.predict(loaded.model, sx, sy, qx[:n])
                runs.append(time.perf_counter() - t)
            times[n] = 1000 * statistics.median(runs)
        right = int((probs.argmax(1) == sy.numpy()).sum())
        print(f"{loaded.title:<44} {times[1]:>10.1f} {times[5]:>12.1f} {right:>4}/5")
    for method in [m for m in ("maml", "fomaml") if m in checkpoints.available_methods()]:
        loaded = checkpoints.get_model(method)
        sx, sy, qx = view.tensors(loaded.image_size)
        per_step = []
        for _ in range(args.repeats):
            stamps = [time.perf_counter()]
            start = None
            for step in inspection.adaptation(loaded.model, sx, sy, qx, inner_lr=0.4, inner_steps=5):
                start = start or step
                inspection.step_probabilities(step, view.n_way)
                inspection.layer_change(start, step)
                stamps.append(time.perf_counter())
            per_step.append((stamps[-1] - stamps[1]) / 5)
        print(f"{loaded.title}: one inner step (5-way 1-shot, 5 queries) {1000 * statistics.median(per_step):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
