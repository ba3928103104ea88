#!/bin/sh
# Run one pipeline stage (`sh pipelines/stage.sh <module> ARGS...` runs `python -m pipelines.<module> ARGS...`)
# with the project's Python whether or not a virtualenv is active: DVC runs stage commands with the caller's
# PATH, where `python` may be the system's (no torch, no tqdm). The first that exists wins:
#   $EMOTORCH_PYTHON, the active virtualenv ($VIRTUAL_ENV), the project's .venv at the DVC root, python3.
# PYTHONHASHSEED=0: TorchScript orders module constants by string hash; a fixed seed makes model.pt the same
# bytes on every rerun (a DVC output must be, or dvc.lock changes).
set -e
stage="$1"
shift
if [ -n "${EMOTORCH_PYTHON:-}" ]; then
  python="$EMOTORCH_PYTHON"
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
  python="$VIRTUAL_ENV/bin/python"
elif [ -x "${DVC_ROOT:-.}/.venv/bin/python" ]; then
  python="${DVC_ROOT:-.}/.venv/bin/python"
else
  python=python3
fi
PYTHONHASHSEED=0 exec "$python" -m "pipelines.$stage" "$@"
