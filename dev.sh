#!/usr/bin/env bash
# Set-up and everyday commands for graphrec, on a machine that has only Python 3.11.
#
#   ./dev.sh retrain [graphrec retrain options]   the retraining flow on the embedded default
#   ./dev.sh test [pytest options]                lint (ruff check), then the test suite and the type check (mypy)
#   ./dev.sh graphrec ARGS...                     any graphrec command (./dev.sh graphrec --help)
#   ./dev.sh env                                  print the environment's folder
#   eval "$(./dev.sh activate)"                   this shell: the environment, this checkout, `graphrec`
#
# The first call builds a virtual environment from requirements.lock (several GB: torch brings
# its CUDA libraries). It lives outside the checkout, in $GRAPHREC_ENV_ROOT (default
# ~/.cache/graphrec), under a name keyed by the lock file's hash, so later calls and fresh clones
# on the same machine reuse it and a changed lock builds a new one.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lock="$here/requirements.lock"
root="${GRAPHREC_ENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/graphrec}"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      python="$candidate"; break
    fi
  done
fi
[ -n "$python" ] || { echo "dev.sh: graphrec needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 2; }

key="$(cat "$lock" | sha256sum | cut -c1-16)"
venv="$root/venv-$key"
mkdir -p "$root"

setup() {
  # One set-up at a time per machine: a second caller waits for the first to finish.
  exec 9>"$root/.setup.lock"
  flock 9
  if [ ! -f "$venv/.complete" ]; then
    echo "dev.sh: building the environment in $venv (first run only; a few minutes)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      --no-deps -r "$lock" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
    "$venv/bin/python" -m pip check >&2
    touch "$venv/.complete"
  fi
  # The project is not installed into the shared environment: each checkout runs its own code from
  # its own folder (PYTHONPATH below), so two clones on one machine never run each other's code.
  # (Environments built by earlier versions of this script held an editable install: removed.)
  if [ -f "$venv/.source" ]; then
    "$venv/bin/python" -m pip uninstall --quiet --disable-pip-version-check -y graphrec >&2 || true
    rm -f "$venv/.source" "$venv/bin/graphrec"
  fi
  exec 9>&-
}

# The repository's lint, before any test: a violation stops the command with ruff's report (exit 1).
lint() {
  (cd "$here" && "$venv/bin/ruff" check --quiet .) ||
    { echo "dev.sh: lint failed (see above; fixable ones: ./dev.sh python -m ruff check --fix .)" >&2; exit 1; }
}

# The type check of the library, deployment code and flows ([tool.mypy]) runs beside the tests (it
# uses the cores the tests leave idle); an error fails the command with mypy's report (exit 1).
test_and_typecheck() {
  local report checker status=0
  report="$(mktemp)"
  (cd "$here" && exec "$venv/bin/python" -m mypy) >"$report" 2>&1 &
  checker=$!
  (run_here "$venv/bin/python" -m pytest "$@") || status=$?
  if ! wait "$checker"; then
    cat "$report" >&2; echo "dev.sh: type check failed (see above)" >&2; status=1
  fi
  rm -f "$report"
  exit "$status"
}

# This checkout's code first on the path; the environment's tools (mlflow, prefect) on PATH.
run_here() { cd "$here"; export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PATH="$venv/bin:$PATH"; exec "$@"; }

cmd="${1:-help}"
[ $# -gt 0 ] && shift
case "$cmd" in
  retrain)  setup; run_here "$venv/bin/python" -m flows.cli retrain "$@" ;;
  test)     setup; lint; test_and_typecheck "$@" ;;
  graphrec) setup; run_here "$venv/bin/python" -m flows.cli "$@" ;;
  python)   setup; run_here "$venv/bin/python" "$@" ;;
  env)      echo "$venv" ;;
  activate) setup
            printf 'source %q/bin/activate\nexport PYTHONPATH=%q${PYTHONPATH:+:$PYTHONPATH}\n' "$venv" "$here"
            printf 'graphrec() { python -m flows.cli "$@"; }\n' ;;
  help|-h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *) echo "dev.sh: unknown command '$cmd' (try: ./dev.sh help)" >&2; exit 2 ;;
esac
