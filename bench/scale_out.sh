#!/usr/bin/env bash
# Two search workers sharing one PostgreSQL server: MLflow's backend store and Optuna's storage are
# pointed at it with the same config keys as the SQLite default (stores.tracking_uri,
# stores.optuna_storage). Starts a throw-away local PostgreSQL (Debian's package, installed if
# missing), runs the workers at once on one study, and writes bench/results/scale_out.{json,md}.
#
#   bash bench/scale_out.sh [TRIALS]        (default 8 trials in all)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
trials="${1:-8}"

pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$pgbin" ]; then
  echo "scale_out: installing Debian's postgresql package" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

work="$(mktemp -d /tmp/graphrec-scale-out.XXXXXX)"
chmod 755 "$work"
mkdir -p "$work/pg" && [ "$(id -u)" = 0 ] && chown postgres "$work/pg"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
as_pg "$pgbin/initdb" -D "$work/pg/data" -U graphrec --auth=trust >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1 -c max_connections=100" start >/dev/null
trap 'as_pg "$pgbin/pg_ctl" -D "$work/pg/data" -m fast stop >/dev/null 2>&1 || true' EXIT
for db in mlflow optuna; do as_pg "$pgbin/createdb" -h 127.0.0.1 -p "$port" -U graphrec "graphrec_$db"; done
server_version="$(as_pg "$pgbin/postgres" --version)"

sets=(--set "stores.root=$work/store"
      --set "stores.tracking_uri=postgresql+psycopg2://graphrec@127.0.0.1:$port/graphrec_mlflow"
      --set "stores.optuna_storage=postgresql+psycopg2://graphrec@127.0.0.1:$port/graphrec_optuna"
      --set search.register_best=false --set train.progress=false --set features.text=false
      --set train.threads=1)
# Create the tables once before two processes race to do it.
"$here/dev.sh" python - "${sets[@]}" <<'EOF'
import sys
from deploy.tracking import configure
from flows.search import open_study
from recsys.config import load_config
cfg = load_config(None, [a for a in sys.argv[1:] if a != "--set"])
configure(cfg.stores)
open_study(cfg)
EOF

start=$(date +%s.%N)
pids=()
for w in 1 2; do
  OMP_NUM_THREADS=1 "$here/dev.sh" graphrec search --trials "$trials" "${sets[@]}" >"$work/worker$w.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
seconds="$(python3 -c "import time; print(round(time.time() - $start, 1))")"
[ "$status" = 0 ] || { tail -30 "$work"/worker*.log >&2; exit "$status"; }

"$here/dev.sh" python - "$seconds" "$trials" "$server_version" "${sets[@]}" <<'EOF'
import sys
from collections import Counter

import optuna
from mlflow.tracking import MlflowClient

from bench.common import write_results
from deploy.tracking import configure
from recsys.config import load_config

seconds, target, server = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cfg = load_config(None, [a for a in sys.argv[4:] if a != "--set"])
experiment = configure(cfg.stores)
study = optuna.load_study(study_name=f"{cfg.stores.experiment}-{cfg.search.family}",
                          storage=cfg.stores.resolved_optuna_storage())
states = Counter(t.state.name for t in study.trials)
numbers = [t.number for t in study.trials]
runs = MlflowClient().search_runs([experiment], "tags.`graphrec.role` = 'trial'", max_results=1000)
hosts = Counter(r.data.tags.get("graphrec.worker", "?") for r in runs)
finished = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
figures = {
    "postgresql": server, "workers": 2, "target_trials": target, "trials": dict(states),
    "finished_trials": finished, "duplicate_trial_numbers": len(numbers) - len(set(numbers)),
    "mlflow_trial_runs": len(runs), "runs_by_worker": dict(hosts), "wall_seconds": seconds,
    "trials_per_hour": round(finished / seconds * 3600, 1),
    "best_value": round(study.best_value, 4) if finished else None,
    "config_keys": ["stores.tracking_uri", "stores.optuna_storage"],
}
rows = [("PostgreSQL", server), ("search workers (processes)", "2"), ("trials finished / target", f"{finished} / {target}"),
        ("trial states", ", ".join(f"{k} {v}" for k, v in sorted(states.items()))),
        ("duplicate trial numbers", str(figures["duplicate_trial_numbers"])),
        ("MLflow child runs", str(len(runs))), ("wall clock (s)", f"{seconds:.0f}"),
        ("trials per hour", f"{figures['trials_per_hour']:.0f}"), ("best objective", str(figures["best_value"]))]
write_results("scale_out", figures, rows, "Two search workers on one PostgreSQL (MLflow store + Optuna storage)",
              "Made by `bash bench/scale_out.sh`: a local PostgreSQL started for the run; the same config keys as "
              "the SQLite default point both stores at it.")
EOF
echo "scale_out: done (logs in $work)"
