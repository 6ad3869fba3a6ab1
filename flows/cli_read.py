"""The commands that run no flow: `recommend`, `validate`, `generate`, `models`, `families` and `ui`
(reading the store or the data, or starting the MLflow UI). flows/cli.py parses and dispatches."""
from __future__ import annotations

import os
import signal
import sys

# Commands that write the store (MLflow, Prefect state, snapshots): a store they could not write is
# refused before anything starts, naming the path (ConfigError: exit 2).
WRITES_STORE = ("retrain", "search", "refresh", "promote", "rollback", "serve")
MAX_K = 10_000  # recommend -k: beyond this a list is no recommendation, and faiss would allocate k per user


def uses_threads(cfg) -> int:
    """The command's thread count (compute.threads), set before torch loads (recsys/threads.py), and
    its training's use of freed memory (compute.reuse_memory, recsys/heap.py)."""
    from recsys.heap import configure as reuse_memory
    from recsys.threads import configure

    reuse_memory(cfg.compute.reuse_memory)
    return configure(cfg.compute.threads, adapt=cfg.compute.adapt_threads)


def config_of(args):
    """The command's configuration; a store it would write (or read) is checked first."""
    from recsys.config import load_config

    cfg = load_config(args.config, args.set)
    uses_threads(cfg)
    if getattr(args, "command", None) in WRITES_STORE:
        cfg.stores.check_writable()
        cfg.compute.check_device()
    elif getattr(args, "command", None) in ("models", "ui"):
        cfg.stores.check_tracking_folder()
    return cfg


def cmd_recommend(args) -> int:
    if not 1 <= args.k <= MAX_K:
        print(f"graphrec recommend: -k {args.k} is out of range; ask for 1 to {MAX_K} items", file=sys.stderr)
        return 2
    from deploy.snapshot import Snapshot, SnapshotError, UnknownUserError
    from recsys.config import load_config

    cfg = load_config(args.config, args.set)
    uses_threads(cfg)
    try:
        snap = Snapshot.open(cfg.stores.resolved_snapshots())
        recs = snap.recommend(args.user, args.k)
    except (SnapshotError, UnknownUserError) as exc:
        print(f"graphrec recommend: {exc}", file=sys.stderr)
        return 2
    from deploy.handover import split

    m = snap.manifest
    unfinished = split(cfg.stores.resolved_snapshots(), None)
    if unfinished:
        print(f"warning: {unfinished}", file=sys.stderr)
    if snap.fallback_from:
        instead = "the newest intact snapshot" if snap.fallback_from == "CURRENT" else "the previous snapshot"
        print(f"warning: {snap.problem}; serving {instead} instead ({snap.name})", file=sys.stderr)
    print(f"top {len(recs)} for user {args.user} (model {m['model_name']} v{m['model_version']}, snapshot {m['name']})")
    print(recs.to_string(index=False))
    return 0


def cmd_validate(args) -> int:
    from recsys.data.loaders import load_data
    from validation.data import validate_data

    cfg = config_of(args)
    data = load_data(cfg.data)
    report = validate_data(data, cfg.validation,
                           require_timestamp=cfg.data.split.kind == "temporal" and "split" not in data.interactions)
    print(report.to_markdown() if args.markdown else report.summary())
    return 0 if report.success else 3


def cmd_generate(args) -> int:
    from recsys.data.loaders import save_files
    from recsys.data.next_day import generate_day

    out = args.out
    if out.exists() and not out.is_dir():
        print(f"graphrec generate: --out {out} is an existing file; give a folder (new, or existing: its "
              "interactions/users/items/social.parquet are replaced)", file=sys.stderr)
        return 2
    cfg = config_of(args)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".graphrec-write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        print(f"graphrec generate: --out {out} cannot be written ({exc.strerror}); give a writable folder",
              file=sys.stderr)
        return 2
    data = generate_day(**cfg.data.synthetic.model_dump())
    paths = save_files(data, out)
    print(f"wrote {data.summary()} to:")
    for name, path in paths.items():
        print(f"  {name}: {path}")
    return 0


UI_START_SECONDS = 600  # how long `graphrec ui` waits for MLflow's UI to answer before giving up


def cmd_ui(args) -> int:
    """MLflow's UI on the store, its address printed once it answers; it runs until stopped."""
    import subprocess
    import time
    import urllib.request

    from deploy.tracking_ui import page_url, ui_command

    cfg = config_of(args)
    cfg.stores.root.mkdir(parents=True, exist_ok=True)
    port = args.port or cfg.stores.ui_port
    base = f"http://{args.host}:{port}"
    print(f"starting MLflow's UI on {cfg.stores.resolved_tracking_uri()} at {base} (its first start can take a "
          "minute); Ctrl-C stops it", flush=True)
    server = subprocess.Popen(ui_command(cfg.stores, args.host, port), start_new_session=True)  # ended with us
    try:
        deadline = time.monotonic() + UI_START_SECONDS
        while server.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    print(f"graphrec ui: MLflow's UI did not answer at {base} within {UI_START_SECONDS} s",
                          file=sys.stderr)
                    return 1
                time.sleep(0.5)
        else:
            print(f"graphrec ui: MLflow's UI ended with exit code {server.returncode} before answering "
                  "(is the port in use? --port chooses another)", file=sys.stderr)
            return 1
        print(f"MLflow UI: {page_url(base, _experiment_id(cfg.stores))}", flush=True)
        return server.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the server and the workers it started
            try:
                os.killpg(server.pid, sig)
            except ProcessLookupError:
                break
            try:
                server.wait(10)
                break
            except subprocess.TimeoutExpired:
                continue


def _experiment_id(stores):
    """The experiment's id in the store (None before the first run)."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient(stores.resolved_tracking_uri()).get_experiment_by_name(stores.experiment)
    return found.experiment_id if found else None


def cmd_families(args) -> int:
    from recsys.recipe import families_table

    for line in families_table():
        print(line)
    return 0


def cmd_models(args) -> int:
    from deploy.models_table import models_table, serving_split

    cfg = config_of(args)
    lines = models_table(cfg.stores, cfg.promotion.metric)
    if not lines:
        print(f"no versions of {cfg.stores.registered_model} yet")
        return 0
    for line in lines:
        print(line)
    split = serving_split(cfg.stores)
    if split:
        print(f"warning: {split}", file=sys.stderr)
    return 0




def cmd_config(args) -> int:
    from recsys.config_show import effective_yaml

    sys.stdout.write(effective_yaml(args.config, args.set))
    return 0


def version_line() -> str:
    """`graphrec --version`: the package's version and, in a git checkout, its commit."""
    import subprocess
    import tomllib
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    try:
        number = version("graphrec")
    except PackageNotFoundError:  # run from a checkout (dev.sh puts it on the path, uninstalled)
        number = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return f"graphrec {number}" + (f" (commit {commit})" if commit else "")
