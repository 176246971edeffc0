#!/usr/bin/env bash
# A fleet on this machine: PostgreSQL, two harli_sgl instances on the embedded
# default model and sglang-router in front of them. Runs the demo finetune job
# through the fleet and shows its adapter answering from both instances.
# Arguments go to harli_sgl.demo.fleet (--root DIR, --instances N, --no-wait).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/setup.sh"
cd "$repo"
export PYTHONPATH="$repo/python${PYTHONPATH:+:$PYTHONPATH}"
exec "$repo/.venv/bin/python" -m harli_sgl.demo.fleet "$@"
