#!/usr/bin/env bash
# Set up if needed (idempotent, seconds when already installed), then run the test suite.
# Extra arguments go to pytest as they are, in one process, e.g. scripts/test.sh test/core -x
#
# Without arguments the suite runs in two phases:
#  1. the unit tests (everything outside test/e2e) in two pytest processes side by side,
#     test/worker in one and the rest in the other: alone, one process kept one of the
#     host's two cores busy and left the other idle (measured 2026-12-03: 43-58% of both);
#  2. the end-to-end tests alone, in one process: their servers pin decode and the
#     finetune worker to cores of their own, and tests that read how co-running shares
#     those cores must not share them with anything else.
# Each phase's processes must pass; pytest's exit 5 (no tests ran) is a failure too.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/setup.sh"
cd "$repo"
export TOKENIZERS_PARALLELISM=false
# The cached environment is shared between clones and its editable install names
# whichever clone ran set-up last; this checkout must win for its own tests.
export PYTHONPATH="$repo/python${PYTHONPATH:+:$PYTHONPATH}"
pytest=("$repo/.venv/bin/python" -m pytest -q -p no:cacheprovider --timeout 1200)
echo "[test] running the test suite (end-to-end tests start a real harli_sgl server on CPU)"
if [ $# -gt 0 ]; then
  exec "${pytest[@]}" --durations=25 "$@"
fi

started=$SECONDS
logs="$(mktemp -d "${TMPDIR:-/tmp}/harli-test.XXXXXX")"
echo "[test] phase 1: unit tests, two processes side by side (logs: $logs)"
# Each process its own pytest temporary root, so neither cleans up the other's.
"${pytest[@]}" --durations=10 --basetemp="$logs/tmp-worker" test/worker >"$logs/worker.log" 2>&1 &
worker_pid=$!
"${pytest[@]}" --durations=10 --basetemp="$logs/tmp-rest" test --ignore=test/worker \
  --ignore=test/e2e >"$logs/rest.log" 2>&1 &
rest_pid=$!
worker_rc=0; rest_rc=0
wait "$worker_pid" || worker_rc=$?
wait "$rest_pid" || rest_rc=$?
echo "[test] --- test/worker (exit $worker_rc) ---"
cat "$logs/worker.log"
echo "[test] --- the other unit tests (exit $rest_rc) ---"
cat "$logs/rest.log"
echo "[test] phase 1 took $((SECONDS - started)) s"
status=0
[ "$worker_rc" = 0 ] && [ "$rest_rc" = 0 ] || status=1
echo "[test] phase 2: end-to-end tests"
"${pytest[@]}" --durations=25 test/e2e || status=1
echo "[test] the suite took $((SECONDS - started)) s; $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
