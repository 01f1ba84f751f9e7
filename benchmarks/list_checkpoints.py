"""Markdown table of the shipped checkpoints with the exact command that made each one.

    python benchmarks/list_checkpoints.py > benchmarks/checkpoints.md
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fewshot import read_checkpoint_info  # noqa: E402
from fewshot.checkpoints import training_summary  # noqa: E402


def row_facts(meta: dict) -> tuple[int | None, float | str, str]:
    """Steps, seconds and the full command behind one checkpoint. A soup (``fewshot soup``) counts its
    ingredients' steps and seconds and shows each one's command after its own."""
    if meta.get("soup"):
        parts = meta["soup"]
        steps = sum(int(p.get("steps_done") or 0) for p in parts)
        seconds = round(sum(float(p.get("seconds") or 0) for p in parts), 3)
        command = meta.get("command", "") + "".join(
            f" ; the average of {Path(p['checkpoint']).name}: {p['command']}"
            + (f" (backbone initialised from {Path(p['init_backbone']).name})" if p.get("init_backbone") else "")
            for p in parts)
        return steps, seconds, command.replace("|", "\\|")
    run = training_summary(meta)
    command = run["command"].replace("|", "\\|")
    if run["init_backbone"]:
        init = meta.get("init_backbone") or {}
        if (meta.get("train_config") or {}).get("freeze_backbone") and init.get("command"):
            # the encoder is that file's, unchanged: say how it was made
            command += (f" (backbone initialised from {Path(run['init_backbone']).name} and kept fixed; that file: "
                        f"{init['command'].replace('|', chr(92) + '|')})")
        else:
            command += f" (backbone initialised from {Path(run['init_backbone']).name})"
    return run["steps_done"], run["seconds"] if run["seconds"] is not None else "", command


def main() -> int:
    print("| checkpoint | method | protocol | trained way/shot | steps | seconds | command |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted((ROOT / "checkpoints").rglob("*.safetensors")):
        meta = read_checkpoint_info(path)
        steps, seconds, command = row_facts(meta)
        pretrain = meta.get("pretrain")  # `fewshot pretrain`: batches over every class, not episodes
        trained = (f"batches of {pretrain.get('batch_size')}" if isinstance(pretrain, dict) else
                   f"{meta.get('n_way')}w{'/'.join(map(str, meta['mix_shots']))}s" if meta.get("mix_shots") else
                   f"{meta.get('n_way')}w{meta.get('n_shot')}s" if meta.get("n_way") else
                   f"K = {meta.get('n_shot')}" if meta.get("n_shot") else "")  # the sine regressors: K points
        print(f"| {path.relative_to(ROOT)} | {meta['method']} | {meta.get('protocol') or ''} | "
              f"{trained} | {steps} | {seconds} | `{command}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
