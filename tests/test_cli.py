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
