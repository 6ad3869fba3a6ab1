import subprocess
import sys

import pytest

from flows.cli import build_parser, main


def test_help_lists_every_command(capsys):
    parser = build_parser()
    text = parser.format_help()
    for command in ("retrain", "recommend", "validate", "generate", "models", "ui"):
        assert command in text
    for command in ("retrain", "recommend", "validate", "generate", "models", "ui"):
        sub = subprocess.run([sys.executable, "-m", "flows.cli", command, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and "--set" in sub.stdout


def test_config_errors_exit_2_with_the_key(capsys):
    assert main(["validate", "--set", "model.dimm=3"]) == 2
    assert "unknown key 'model.dimm'" in capsys.readouterr().err


def test_recommend_without_snapshot_says_what_to_do(tmp_path, capsys):
    assert main(["recommend", "--user", "u1", "--set", f"stores.root={tmp_path}"]) == 2
    assert "graphrec retrain" in capsys.readouterr().err


def test_generate_then_validate_files(tmp_path, capsys):
    small = ["--set", "data.synthetic.n_users=100", "--set", "data.synthetic.n_items=60"]
    assert main(["generate", "--out", str(tmp_path), *small]) == 0
    files = ["--set", "data.source=files", "--set", f"data.interactions={tmp_path}/interactions.parquet",
             "--set", f"data.users={tmp_path}/users.parquet", "--set", f"data.items={tmp_path}/items.parquet"]
    assert main(["validate", *files]) == 0
    assert "passed all" in capsys.readouterr().out


def test_retrain_on_an_empty_file_is_refused_without_retries(tmp_path, capsys):
    from flows.cli import prepare_prefect

    prepare_prefect(tmp_path)
    empty = tmp_path / "interactions.csv"
    empty.write_text("")
    code = main(["retrain", "--set", "data.source=files", "--set", f"data.interactions={empty}",
                 "--set", f"stores.root={tmp_path / 'store'}"])
    assert code == 2
    assert "is empty" in capsys.readouterr().err
    assert not (tmp_path / "store" / "snapshots").exists()


def test_an_error_prefect_reports_after_a_sigterm_still_ends_as_stopped(monkeypatch):
    """SIGTERM landing while Prefect sets a task run up comes back as Prefect's own error ("Task run
    is not set"); the command still ends as stopped (143 in main) and the run as KILLED."""
    import deploy.runs
    from flows import stopping
    from flows.cli import _failed

    assert _failed(ValueError("Task run is not set"), "retrain", "") == 1  # no signal: an error
    monkeypatch.setattr(stopping, "_received", [15])
    with pytest.raises(stopping.Terminated):
        _failed(ValueError("Task run is not set"), "retrain", "")
    ended = []
    monkeypatch.setattr(deploy.runs, "_end_if_possible", lambda run_id, status, note: ended.append(status))
    with pytest.raises(ValueError):
        with deploy.runs.ended_with_outcome("run", interrupted=stopping.stop_requested):
            raise ValueError("Task run is not set")
    assert ended == ["KILLED"]


def test_version_names_the_package_and_its_commit():
    import tomllib

    from tests.conftest import REPO

    out = subprocess.run([sys.executable, "-m", "flows.cli", "--version"], capture_output=True, text=True, cwd=REPO)
    number = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert out.returncode == 0 and out.stdout.startswith(f"graphrec {number}")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if commit.returncode == 0:
        assert f"(commit {commit.stdout.strip()})" in out.stdout


def test_config_prints_every_key_with_the_source_of_each_change(tmp_path, capsys):
    """`graphrec config`: defaults included, a comment naming the file's line or the --set behind
    each value that is not the default, and the text read back gives the same configuration."""
    import yaml

    from recsys.config import load_config

    mine = tmp_path / "mine.yaml"
    mine.write_text("model:\n  dim: 32\ntrain:\n  patience: 7\n")
    assert main(["config", "-c", str(mine), "--set", "train.patience=9", "--set", "eval.ks=[5,20]"]) == 0
    text = capsys.readouterr().out
    lines, path = {}, []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        path = path[:depth] + [line.split(":")[0].strip()]
        lines[".".join(path)] = line
    assert lines["model.dim"].endswith(f"# {mine} line 2")
    assert lines["train.patience"].endswith("# --set train.patience")  # the last word wins over the file
    assert lines["eval.ks"].endswith("# --set eval.ks") and "[5, 20]" in lines["eval.ks"]
    assert "#" not in lines["model.layers"] and "train.batch_size" in lines  # defaults shown, not marked
    again = tmp_path / "again.yaml"
    again.write_text(text)
    assert yaml.safe_load(text)["train"]["patience"] == 9
    expected = load_config(mine, ["train.patience=9", "eval.ks=[5,20]"])
    assert load_config(again) == expected


def test_the_example_configuration_is_accepted_as_it_is(capsys):
    """examples/retrain.yaml: read by the same loader as retrain, and its data passes validation."""
    from tests.conftest import REPO

    example = REPO / "examples" / "retrain.yaml"
    assert main(["config", "-c", str(example)]) == 0
    assert main(["validate", "-c", str(example)]) == 0
    assert "passed all" in capsys.readouterr().out


def test_shell_completion_answers_commands_and_options(tmp_path):
    """argcomplete's protocol, as the shell's hook speaks it: the command line so far in the
    environment, the candidates written to a file."""
    import os

    from tests.conftest import REPO

    def complete(line: str) -> set[str]:
        out = tmp_path / "candidates"
        env = {**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": line,
               "COMP_POINT": str(len(line)), "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}
        done = subprocess.run([sys.executable, "-m", "flows.cli"], env=env, cwd=REPO, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
        return set(out.read_text().split())

    assert {"retrain", "refresh", "recommend"} <= complete("graphrec re")
    assert "--set" in complete("graphrec retrain --se")
