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
own_rc=0; rest_e2e_rc=0
wait "$own_pid" || own_rc=$?
wait "$rest_e2e_pid" || rest_e2e_rc=$?
echo "[test] --- end-to-end, the models' own servers (exit $own_rc) ---"
cat "$logs/e2e-own.log"
echo "[test] --- end-to-end, the fleet and the session server (exit $rest_e2e_rc) ---"
cat "$logs/e2e-rest.log"
[ "$own_rc" = 0 ] && [ "$rest_e2e_rc" = 0 ] || status=1
echo "[test] the suite took $((SECONDS - started)) s; $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
