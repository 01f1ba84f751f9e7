#!/usr/bin/env bash
# Installs the libraries benchmarks/speed.py compares against, into the active Python (default .venv):
#   higher 0.2.1, easyfsl 1.5.0 (wheels from PyPI) and learn2learn 0.2.0, which does not build on
#   Python 3.11 from its sdist (learn2learn issue #413: its shipped Cython output is too old), so its
#   .pyx sources are re-cythonized first. gym is installed only because `import learn2learn` imports it.
# Benchmark-only: nothing in fewshot/, the app or the tests needs these.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-$(pwd)/.venv/bin/python}"
"$PY" -m pip install -q higher==0.2.1 easyfsl==1.5.0 cython gym==0.26.2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$work" learn2learn==0.2.0
tar xzf "$work"/learn2learn-0.2.0.tar.gz -C "$work"
src="$work/learn2learn-0.2.0"
(cd "$src" && "$PY" -m cython -3 learn2learn/data/meta_dataset.pyx learn2learn/data/task_dataset.pyx \
    learn2learn/data/transforms.pyx)
"$PY" -m pip install -q --no-deps --no-build-isolation "$src"
"$PY" -c "import higher, easyfsl, learn2learn; print('higher', higher.__version__ if hasattr(higher, '__version__') else '0.2.1', '| easyfsl ok | learn2learn', learn2learn.__version__)"
