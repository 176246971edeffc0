#!/usr/bin/env bash
# Set up if needed (idempotent, seconds when already installed), then run the test suite.
# Extra arguments go to pytest as they are, in one process, e.g. scripts/test.sh test/core -x
#
# Without arguments the suite runs in three phases:
#  1. the unit tests (everything outside test/e2e) in two pytest processes side by side,
#     test/worker in one and the rest in the other: alone, one process kept one of the
#     host's two cores busy and left the other idle (measured 2026-12-03: 43-58% of both);
#  2. the end-to-end tests marked quiet_host, alone: they read TPOTs against an SLO,
#     which another server on the same cores would change. Their server's start-up
#     latency profile, measured on the quiet host, is the one every later byte-model
#     server of the run loads (HARLI_TEST_PROFILE_DIR);
#  3. the other end-to-end tests in two processes side by side: SmolLM2's server, the
#     crash-and-restart servers and the keyed server in one, everything else in the
#     other, the fleet first so that its instances and the session server are not up at
#     once (memory). Alone, one process kept the host 66% busy on average, at one core
#     more than half of the time (sampled every 5 s, 2026-12-03); side by side, 99%.
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

# wait_pair PID1 LOG1 TITLE1 PID2 LOG2 TITLE2: wait for two pytest processes, print their
# logs one after the other; fails if either did.
wait_pair() {
  local rc1=0 rc2=0
  wait "$1" || rc1=$?
  wait "$4" || rc2=$?
  echo "[test] --- $3 (exit $rc1) ---"
  cat "$2"
  echo "[test] --- $6 (exit $rc2) ---"
  cat "$5"
  [ "$rc1" = 0 ] && [ "$rc2" = 0 ]
}

started=$SECONDS
logs="$(mktemp -d "${TMPDIR:-/tmp}/harli-test.XXXXXX")"
echo "[test] phase 1: unit tests, two processes side by side (logs: $logs)"
# Each process its own pytest temporary root, so neither cleans up the other's.
"${pytest[@]}" --durations=10 --basetemp="$logs/tmp-worker" test/worker >"$logs/worker.log" 2>&1 &
worker_pid=$!
"${pytest[@]}" --durations=10 --basetemp="$logs/tmp-rest" test --ignore=test/worker \
  --ignore=test/e2e >"$logs/rest.log" 2>&1 &
rest_pid=$!
status=0
wait_pair "$worker_pid" "$logs/worker.log" "test/worker" \
  "$rest_pid" "$logs/rest.log" "the other unit tests" || status=1
echo "[test] phase 1 took $((SECONDS - started)) s"
export HARLI_TEST_PROFILE_DIR="$logs/profiles"
echo "[test] phase 2: end-to-end tests that need the host to themselves"
"${pytest[@]}" --durations=10 --basetemp="$logs/tmp-quiet" -m quiet_host test/e2e || status=1
echo "[test] phase 2 ended at $((SECONDS - started)) s"
echo "[test] phase 3: the other end-to-end tests, two processes side by side"
own=(test_smollm2 test_persistence test_keys_and_limits test_tenants)
own_files=()
for m in "${own[@]}"; do own_files+=("test/e2e/$m.py"); done
rest=(test/e2e/test_fleet.py)
for f in test/e2e/test_*.py; do
  case " ${own_files[*]} test/e2e/test_fleet.py " in *" $f "*) ;; *) rest+=("$f") ;; esac
done
"${pytest[@]}" --durations=15 --basetemp="$logs/tmp-own" -m "not quiet_host" "${own_files[@]}" \
  >"$logs/e2e-own.log" 2>&1 &
own_pid=$!
"${pytest[@]}" --durations=15 --basetemp="$logs/tmp-rest-e2e" -m "not quiet_host" "${rest[@]}" \
  >"$logs/e2e-rest.log" 2>&1 &
rest_e2e_pid=$!
wait_pair "$own_pid" "$logs/e2e-own.log" "end-to-end, the models' own servers" \
  "$rest_e2e_pid" "$logs/e2e-rest.log" "end-to-end, the fleet and the session server" || status=1
echo "[test] the suite took $((SECONDS - started)) s; $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
