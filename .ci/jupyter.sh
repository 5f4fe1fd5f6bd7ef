#!/usr/bin/env bash
# JupyterLab from PyPI in a virtual environment of its own (made once, kept
# under ~/.cache), for the interactive sessions' browser test. Prints the
# variable the test reads: eval "$(bash .ci/jupyter.sh)"
set -euo pipefail
venv="${GIGAFAB_JUPYTER_VENV:-$HOME/.cache/gigafab/jupyterlab}"
if [ ! -x "$venv/bin/jupyter-lab" ]; then
    echo "jupyter.sh: installing jupyterlab from PyPI into $venv" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "jupyterlab>=4,<5" >&2
fi
"$venv/bin/jupyter-lab" --version >&2
echo "export GIGAFAB_TEST_JUPYTER=$venv/bin/jupyter-lab"
