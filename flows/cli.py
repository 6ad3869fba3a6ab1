"""`graphrec`: the command line. Heavy imports (Prefect, MLflow, torch) happen inside commands, so
`graphrec --help` and `graphrec recommend` start fast."""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from flows.cli_read import (
    MAX_K,
    WRITES_STORE,
    cmd_config,
    cmd_families,
    cmd_generate,
    cmd_models,
    cmd_recommend,
    cmd_ui,
    cmd_validate,
    uses_threads,
    version_line,
)
from flows.cli_read import config_of as _config
from recsys import families

FULL_DISK = 5  # exit code: a store's file system had no room (README: exit codes)
TRAINING_FAILED = 6  # exit code: the Ray training workers failed more often than compute.ray.max_failures


def prepare_prefect(root: Path) -> Path:
    """Keep Prefect's state (its server's database) under the project folder unless the user
    points at a Prefect server with PREFECT_API_URL. Returns PREFECT_HOME."""
    home = Path(os.environ.setdefault("PREFECT_HOME", str((root / "prefect").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.3")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return home


@contextmanager
def _prefect_session(args, cfg, services: bool = False):
    """A Prefect API for the command (its own server unless PREFECT_API_URL is set) and its log
    file; yields the log file's path."""
    from flows.prefect_api import log_to_file, prefect_api

    home = prepare_prefect(cfg.stores.root)
    log = log_to_file(cfg.stores.root / "logs", args.command, args.verbose)
    with prefect_api(home, services):
        yield log


def _run_flow(args, cfg, flow, stopped: str, **kwargs):
    """(the flow's result, None) or (None, exit code) after the one clear line."""
    with _prefect_session(args, cfg) as log:
        out, code = _finished(flow(config=cfg, return_state=True, **kwargs), args.command, stopped)
    if code is not None:
        print(f"  (details: {log}{'' if args.verbose else '; or run again with --verbose'})", file=sys.stderr)
    return out, code


def _finished(state, command: str, stopped: str):
    """(the flow's result, None) when it completed, else (None, exit code) after saying why."""
    try:
        return state.result(), None
    except Exception as exc:
        return None, _failed(exc, command, stopped)


def _failed(exc: Exception, command: str, stopped: str) -> int:
    from deploy.errors import RegistryError, StoreFullError
    from deploy.ray_train import RayTrainingFailed
    from flows.stopping import stop_requested, stopped_by
    from recsys.config import ConfigError
    from recsys.data.loaders import DataLoadError
    from validation.report import DataValidationError

    if stop_requested():  # Prefect caught the interruption and reported an error of its own
        raise stopped_by() from None
    if isinstance(exc, DataValidationError):
        print(f"\nstopped at validation; {stopped}\n{exc}", file=sys.stderr)
        return 3
    if isinstance(exc, StoreFullError):
        print(f"\ngraphrec {command}: {exc.strerror}. The champion and CURRENT are unchanged", file=sys.stderr)
        return FULL_DISK
    if isinstance(exc, RayTrainingFailed):
        print(f"\ngraphrec {command}: the training workers failed beyond compute.ray.max_failures: {exc}. "
              "The champion and CURRENT are unchanged", file=sys.stderr)
        return TRAINING_FAILED
    if isinstance(exc, (DataLoadError, RegistryError, ConfigError)):  # bad input or settings, found in the flow
        print(f"\ngraphrec {command}: {exc}", file=sys.stderr)
        return 2
    print(f"\n{command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)  # the flow's logs hold the traceback
    return 1


def cmd_retrain(args) -> int:
    cfg = _config(args)
    from flows.retrain import retrain_flow

    out, code = _run_flow(args, cfg, retrain_flow, "nothing was trained or registered.")
    if code is not None:
        return code
    print(f"\nrun {out['run_id']}  model version {out['version']}  "
          f"{'-> champion' if out['promoted'] else '(champion unchanged)'}")
    refit = out.get("refit_epochs")
    if refit:
        print(f"  served: refit on training and validation pairs for {refit} epochs (train.refit); valid is "
              "the model chosen on it, test the served one")
    for split, m in out["metrics"].items():
        if split in ("valid", "test"):
            gate = "  (the promotion gate's split)" if split == cfg.promotion.split else ""
            print(f"  {split:5s} " + "  ".join(f"{k}={v:.4f}" for k, v in m.items() if k.endswith(("@10", "@20")))
                  + gate)
    print(f"  {out['decision']['reason']}")
    for line in out.get("data_warnings", []):
        print(f"  data warning: {line}")
    print(f"  snapshot: {out['snapshot']}")
    print(f"  MLflow UI: graphrec ui  ->  {out['run_url']}")
    return 0


def cmd_search(args) -> int:
    overrides = list(args.set)
    for key, value in (("family", args.family), ("trials", args.trials), ("timeout", args.timeout),
                       ("study", args.study), ("runner", args.runner), ("workers", args.workers),
                       ("first_trial_from", args.first_trial_from)):
        if value is not None:
            overrides.append(f"search.{key}={value}")
    from recsys.config import load_config

    cfg = load_config(args.config, overrides)
    uses_threads(cfg)
    cfg.stores.check_writable()
    cfg.compute.check_device()
    from flows.search import search_flow

    out, code = _run_flow(args, cfg, search_flow, "no trial was run.")
    if code is not None:
        return code
    print(f"\nstudy {out['study']}: " + ", ".join(f"{n} {k}" for k, n in out["trials"].items() if n))
    if "best_params" in out:
        print(f"  best trial {out['best_trial']}: {out['objective']}={out['best_value']:.4f}  {out['best_params']}")
        if out["chosen_trial"] != out["best_trial"]:
            print(f"  chosen trial {out['chosen_trial']}: {out['objective']}={out['chosen_value']:.4f}  "
                  f"{out['chosen_params']}")
        print(f"  {out['reason']}")
    if "chosen_from_run" in out:
        print(f"  the chosen trial is {out['chosen_from_run']} (search.first_trial_from): trained and gated "
              "already, not retrained")
    if "recipe_kept" in out:
        print(f"  recipe kept: the chosen configuration is what champion v{out['recipe_kept']} trained on this data "
              "(nothing retrained or registered)")
    if "retrain" in out:
        r = out["retrain"]
        print(f"  best configuration retrained: run {r['run_id']}, model version {r['version']} "
              f"{'-> champion' if r['promoted'] else '(challenger; champion unchanged)'}")
        print(f"  {r['decision']['reason']}")
    return 0


def _ops_flow(args, flow_name: str, **kwargs):
    cfg = _config(args)
    import flows.ops as ops

    return _run_flow(args, cfg, getattr(ops, flow_name), "nothing was changed.", **kwargs)


def cmd_refresh(args) -> int:
    out, code = _ops_flow(args, "refresh_flow")
    if code is None:
        print(f"snapshot: {out['snapshot']} ({'written' if out['written'] else 'unchanged: already current'})")
    return code or 0


def cmd_promote(args) -> int:
    if args.force and not args.reason:
        print("graphrec promote: --force needs --reason \"why\" (it is recorded on the version)", file=sys.stderr)
        return 2
    out, code = _ops_flow(args, "promote_flow", version=str(args.version), force=args.reason if args.force else None)
    if code is not None:
        return code
    d = out["decision"]
    for g in d["gates"]:
        print(f"  {g['name']:<9} {'pass' if g['passed'] else 'FAIL'}  {g['detail'].splitlines()[0]}")
    print(f"version {d['version']}: {'champion' if d['promoted'] else 'not promoted'} ({d['reason']})")
    if "snapshot" in out:
        print(f"snapshot: {out['snapshot']}")
    return 0 if d["promoted"] else 4


def cmd_rollback(args) -> int:
    out, code = _ops_flow(args, "rollback_flow", reason=args.reason or "")
    if code is None:
        print(f"champion v{out['from']} -> v{out['to']}; CURRENT: {out['snapshot']}")
    return code or 0


def cmd_serve(args) -> int:
    cfg = _config(args)
    with _prefect_session(args, cfg, services=True):  # services: Prefect's scheduler creates the runs
        from prefect import serve

        from flows.ops import deployments

        found = deployments(cfg)
        for d in found:
            print(f"serving {d.flow_name}/{d.name} on {d.schedules[0].schedule}")
        if os.environ.get("PREFECT_API_URL", "").startswith("http://127.0.0.1:"):
            print(f"no PREFECT_API_URL of yours: a Prefect server of this process's own at "
                  f"{os.environ['PREFECT_API_URL']} (see README: Schedules)")
        serve(*found)  # returns when stopped: Prefect's runner takes the interruption itself
    from flows.stopping import stop_requested, stopped_by

    if stop_requested():
        raise stopped_by()
    return 0


class _Version(argparse.Action):
    """--version, worked out only when asked (it reads the package and the checkout's commit)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphrec",
        description="Graph recommenders retrained by a Prefect flow, tracked and registered in MLflow.",
    )
    parser.add_argument("--version", action=_Version, help="print graphrec's version (and commit) and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", "-c", metavar="FILE", help="YAML config (default: the embedded setup)")
        p.add_argument("--set", "-s", metavar="KEY=VALUE", action="append", default=[],
                       help="override a config key, e.g. --set train.epochs=10 (repeatable)")
        p.add_argument("--verbose", action="store_true",
                       help="print Prefect's tracebacks too (they are always in .graphrec/logs/)")
        p.set_defaults(func=func)
        return p

    p = add("retrain", cmd_retrain, "run the retraining flow: validate, build graph, train, evaluate, register, "
                                    "promote, refresh the embedding snapshot")
    p.add_argument("--allow-shrink", "--allow-drift", dest="set", action="append_const",
                   const="promotion.data_drift.allow=true",
                   help="train even if today's data differs from the champion's beyond promotion.data_drift's "
                        "bounds (recorded on the run); same as --set promotion.data_drift.allow=true")
    p = add("search", cmd_search, "Optuna search over one model family; trials are MLflow child runs; the best "
                                  "configuration is retrained, registered as challenger and gated")
    p.add_argument("--family", choices=families.searchable(), help="default: search.family")
    p.add_argument("--trials", type=int, help="finished trials the study should hold (default: search.trials)")
    p.add_argument("--timeout", type=float, help="wall-clock seconds for this invocation's trials: none starts "
                   "later, and one still training stops at its next epoch end (the best trial's retraining "
                   "comes after)")
    p.add_argument("--study", help="study name (default <experiment>-<family>); an existing one is resumed")
    p.add_argument("--runner", choices=["local", "prefect"], help="run trials in-process or as Prefect tasks")
    p.add_argument("--workers", type=int, help="prefect runner: trials in flight at once")
    p.add_argument("--first-trial-from", metavar="RUN_ID", help="a new study's first trial is this finished "
                   "retrain of the same recipe on the same data, not the recipe trained again "
                   "(search.first_trial_from; its tracking store: search.first_trial_store)")
    p = add("recommend", cmd_recommend, "top-k items for a user, from the CURRENT embedding snapshot")
    p.add_argument("--user", "-u", required=True, help="user id")
    p.add_argument("-k", type=int, default=10, help=f"how many items, 1 to {MAX_K} (default 10)")
    p = add("validate", cmd_validate, "run the data validation suites only and print the report")
    p.add_argument("--markdown", action="store_true", help="print the full markdown report")
    p = add("generate", cmd_generate, "write the synthetic professional network as Parquet files")
    p.add_argument("--out", required=True, type=Path, help="output folder (made if missing; not a file)")
    add("config", cmd_config, "print the effective configuration as YAML: every key, defaults included, and "
                              "where each value that is not the default came from (-c FILE, --set)")
    add("models", cmd_models, "list registered versions with aliases and gate results")
    add("families", cmd_families, "list the model families (recsys/families.py): inductive or not, what they read, "
                                  "whether a search can tune them")
    add("refresh", cmd_refresh, "write a new embedding snapshot from the champion for today's data (inductive "
                                "champions embed new users and items); no training")
    p = add("promote", cmd_promote, "put a registered version through the promotion gates and make it champion "
                                    "if they pass; its snapshot becomes CURRENT")
    p.add_argument("--version", "-v", required=True, help="registered model version")
    p.add_argument("--force", action="store_true", help="promote even if gates fail (needs --reason)")
    p.add_argument("--reason", help="why; recorded on the version")
    p = add("rollback", cmd_rollback, "move champion back to the version it replaced, and CURRENT to its snapshot")
    p.add_argument("--reason", help="why; recorded on the version rolled back")
    add("serve", cmd_serve, "serve the retrain and refresh flows as Prefect deployments on their cron schedules "
                            "(schedule.* in the config); runs until stopped")
    p = add("ui", cmd_ui, "start the MLflow UI on the configured store")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="default: stores.ui_port (5000), the port of the links graphrec prints")
    return parser


def main(argv: list[str] | None = None, supervised: bool = False) -> int:
    """The command line. `supervised` (as `python -m flows.cli` runs it): a command that writes the
    store runs in a child process of its own session, so that the terminal's signals reach the
    command and not the servers and workers it starts (flows/stopping.py)."""
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (argcomplete's hook): answer, exit
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    from flows.stopping import stop_on_signals, supervise

    if supervised and args.command in WRITES_STORE:
        return supervise(lambda: _command(args), args.command)
    stop_on_signals()
    return _command(args)


def _command(args) -> int:
    """The command, with its errors and interruptions said in one line and its exit code."""
    from deploy.errors import RegistryError, StoreFullError, store_full
    from flows.stopping import Terminated
    from recsys.config import ConfigError
    from recsys.data.loaders import DataLoadError

    try:
        return args.func(args)
    except (ConfigError, DataLoadError, RegistryError) as exc:
        print(f"graphrec {args.command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # outside a flow: the store's folders, the log file
        full = exc if isinstance(exc, StoreFullError) else store_full(exc, exc.filename or ".", "writing")
        if full is None:
            raise
        print(f"graphrec {args.command}: {full.strerror}", file=sys.stderr)
        return FULL_DISK
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the flow is marked crashed, its MLflow run KILLED
        what = f"stopped by {exc or 'SIGTERM'}" if isinstance(exc, Terminated) else "interrupted"
        print(f"\ngraphrec {args.command}: {what}; the champion and CURRENT are as they were unless a line "
              "above says it was promoted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main(supervised=True))
