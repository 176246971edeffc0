#!/usr/bin/env bash
# Set up if needed (idempotent, seconds when already installed), then run the test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh test/core -x
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/setup.sh"
cd "$repo"
export TOKENIZERS_PARALLELISM=false
# The cached environment is shared between clones and its editable install names
# whichever clone ran set-up last; this checkout must win for its own tests.
export PYTHONPATH="$repo/python${PYTHONPATH:+:$PYTHONPATH}"
echo "[test] running the test suite (end-to-end tests start a real harli_sgl server on CPU)"
# pytest exits 5 when no test ran; set -e makes that a failure too.
# The 25 slowest tests are listed at the end: where the suite's time budget goes.
exec "$repo/.venv/bin/python" -m pytest -q -p no:cacheprovider --timeout 1200 --durations=25 "${@:-test}"
