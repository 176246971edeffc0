#!/usr/bin/env bash
# Set up everything, serve the embedded default model with Harli, and run a demo
# finetune job against it (--no-demo-job to skip).
# Extra arguments go to harli_sgl.launch_server, e.g. scripts/run.sh --port 30000 --tpot-slo-ms 80
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/setup.sh"
cd "$repo"
export PYTHONPATH="$repo/python${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, not the last one set up
exec "$repo/.venv/bin/python" -m harli_sgl.demo "$@"
