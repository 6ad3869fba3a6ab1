"""A battery of bad inputs, each through the real command line against one store that holds a
champion: the exit code the README documents (2 bad configuration or input, 3 data failed
validation), a message naming the file / line / key / value, and afterwards the champion, the
challenger, the registered versions and CURRENT exactly as they were.

Most cases are refused before anything trains: at config load, at the start of a command that
writes the store, while the data loads, or at validation. Data cases run through `validate`
(same loaders and suites, no Prefect) except a few through `retrain`, `refresh` and `promote`,
which show the flows refuse them too without moving anything.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import recsys.data.loaders  # noqa: F401  (imported before a case runs under another user id)
from deploy.snapshot import current_name
from flows.cli import main as cli_main
from flows.cli import prepare_prefect
from recsys.config import load_config
from tests.conftest import REPO, TINY_NETWORK

TINY = [*TINY_NETWORK, "train.epochs=1", "train.eval_every=1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One tiny retrain: version 1 is champion (and challenger), its snapshot is CURRENT."""
    root = tmp_path_factory.mktemp("bad-inputs-store")
    prepare_prefect(root)
    assert run(root, ["retrain"]) == 0
    return root


def run(root: Path, argv: list[str], sets: tuple = ()) -> int:
    args = list(argv)
    for item in [f"stores.root={root}", *TINY, *sets]:
        args += ["--set", item]
    return cli_main(args)


def state(root: Path) -> dict:
    """What no bad input may change: aliases, registered versions, CURRENT's bytes."""
    cfg = load_config(None, [f"stores.root={root}"])
    uri = cfg.stores.resolved_tracking_uri()
    client = MlflowClient(uri, registry_uri=uri)
    name = cfg.stores.registered_model
    pointer = cfg.stores.resolved_snapshots() / "CURRENT"
    return {"aliases": {a: str(v) for a, v in client.get_registered_model(name).aliases.items()},
            "versions": sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'")),
            "CURRENT": pointer.read_bytes()}


GOOD_ROWS = [(u, i, 1_700_000_000 + 60 * (10 * u + i)) for u in (1, 2, 3) for i in (1, 2, 3, 4)]


def csv(rows, header="user_id,item_id,timestamp", sep=",") -> bytes:
    lines = [header] + [sep.join("" if v is None else str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def files_for(bad: Path) -> dict[str, bytes]:
    """Every bad file of the battery, by path under the battery's folder."""
    good = csv(GOOD_ROWS)
    return {
        # LightGCN text format (data.source=gowalla)
        "gw_token/train.txt": b"0 1 2\n1 2 x3\n", "gw_token/test.txt": b"0 3\n",
        "gw_utf8/train.txt": b"0 1 2\n1 2 3\xff\n", "gw_utf8/test.txt": b"0 3\n",
        "gw_float/train.txt": b"0 1 2\n1 2.5 3\n", "gw_float/test.txt": b"0 3\n",
        "gw_overflow/train.txt": b"0 1 2\n1 99999999999999999999\n", "gw_overflow/test.txt": b"0 3\n",
        "gw_empty/train.txt": b"\n", "gw_empty/test.txt": b"0 3\n",
        "gw_notest/train.txt": b"0 1 2 3\n",
        "gw_testonly/train.txt": b"0 1 2 3\n1 1 2 3\n2 1 2 3\n", "gw_testonly/test.txt": b"0 4\n1000000000000 1 2 3\n",
        # LastFM format (data.source=lastfm)
        "lf_token/data1.txt": b"1\t2\t3\n2\tabc\t4\n", "lf_token/test1.txt": b"1\t2\t3\n",
        "lf_token/trustnetwork.txt": b"1\t2\n",
        "lf_utf8/data1.txt": b"1\t2\t3\n2\t\xe94\t4\n", "lf_utf8/test1.txt": b"1\t2\t3\n",
        "lf_utf8/trustnetwork.txt": b"1\t2\n",
        "lf_fields/data1.txt": b"1\t2\t3\n2\t4\t5\t6\n", "lf_fields/test1.txt": b"1\t2\t3\n",
        "lf_fields/trustnetwork.txt": b"1\t2\n",
        "lf_notrust/data1.txt": b"1\t2\t3\n", "lf_notrust/test1.txt": b"1\t2\t3\n",
        # CSV / Parquet (data.source=files)
        "good.csv": good,
        "other_names.csv": csv(GOOD_ROWS, "member,job,ts"),
        "utf8.csv": good + b"3,5\xff,1700009999\n",
        "ts_word.csv": csv(GOOD_ROWS[:5] + [(3, 9, "yesterday")]),
        "ts_mixed.csv": csv(GOOD_ROWS[:2] + [(1, 9, 1_700_000_000_000)]),
        "ts_micro.csv": csv([(1, 1, 1_700_000_000_000_000)]),
        "ts_dayfirst.csv": csv([(1, 1, "30/11/2026")]),
        "log.json": b'[{"user_id": 1, "item_id": 2}]',
        "empty.csv": b"",
        "users_noid.csv": b"member,title\n1,x\n2,y\n3,z\n",
        "social_noends.csv": b"a,b\n1,2\n",
        "corrupt.parquet": b"PAR1 this is not a parquet file",
        "null_user.csv": csv(GOOD_ROWS + [(None, 2, 1_700_000_500)]),
        "items_short.csv": b"item_id\n1\n2\n3\n",
        "negative_ts.csv": csv(GOOD_ROWS[:-1] + [(3, 4, -5)]),
        "duplicate.csv": csv(GOOD_ROWS + GOOD_ROWS[:1]),
        "few.csv": csv([(u, 1, 1_700_000_000 + u) for u in (1, 2, 3)]),
        "social_unknown.csv": b"src,dst\n1,2\n1,99\n",
        "a_file": b"not a folder\n",
        "config_utf8.yaml": b"model:\n  dim: 8\n# caf\xe9\n",
        "config_syntax.yaml": b"model: [dim: 3\n",
        "config_list.yaml": b"- just\n- a list\n",
        "config_dup.yaml": b"train:\n  lr: 0.01\n  epochs: 3\n  lr: 0.02\n",
    }


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-inputs")
    for name, content in files_for(folder).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return folder


def files(interactions: str, *more: str) -> tuple:
    return ("data.source=files", f"data.interactions={{bad}}/{interactions}", *more)


# (id, argv, --set values, exit code, fragment of the message); {bad} is the battery's folder,
# {store} the store's root.
CASES = [
    # configuration, refused at load (before Prefect or any data)
    ("unknown-key", ["retrain"], ["model.dimm=8"], 2, "unknown key 'model.dimm'; allowed here: family, dim"),
    ("bad-family", ["retrain"], ["model.family=transformer"], 2,
     "'model.family': unknown model family; choose one of lightgcn, gcn"),
    ("negative-epochs", ["retrain"], ["train.epochs=-1"], 2,
     "'train.epochs': must be auto or a positive integer; got -1"),
    ("monitor-k-not-computed", ["retrain"], ["train.monitor=ndcg@30"], 2,
     "train.monitor='ndcg@30' is not computed; choose one of"),
    ("monitor-unknown-metric", ["retrain"], ["train.monitor=accuracy"], 2,
     "train.monitor='accuracy' is not computed"),
    ("promotion-metric", ["retrain"], ["promotion.metric=recall@7"], 2,
     "promotion.metric='recall@7' is not computed; choose one of"),
    ("ks-without-20", ["retrain"], ["eval.ks=[5]"], 2, "(or add 20 to eval.ks=[5])"),
    ("model-name-slash", ["retrain"], ["stores.registered_model=team/model"], 2,
     "'stores.registered_model': not a usable registered-model name"),
    ("model-name-space", ["retrain"], ["stores.registered_model=my model"], 2, "got 'my model'"),
    ("model-name-quote", ["models"], ["stores.registered_model=it's"], 2, "'stores.registered_model'"),
    ("override-without-equals", ["retrain"], ["train.epochs"], 2, "override 'train.epochs' must look like key=value"),
    ("yaml-non-utf8", ["retrain", "-c", "{bad}/config_utf8.yaml"], [], 2,
     "config_utf8.yaml is not UTF-8 text: byte 0xe9 at offset 21 (line 3, column 6)"),
    ("yaml-syntax", ["retrain", "-c", "{bad}/config_syntax.yaml"], [], 2,
     "config_syntax.yaml is not valid YAML at line 2, column 1"),
    ("yaml-list", ["validate", "-c", "{bad}/config_list.yaml"], [], 2, "must hold a mapping of sections, got list"),
    ("yaml-missing", ["retrain", "-c", "{bad}/nowhere.yaml"], [], 2, "nowhere.yaml does not exist"),
    ("yaml-duplicate-key", ["retrain", "-c", "{bad}/config_dup.yaml"], [], 2,
     "config_dup.yaml: key 'lr' is given twice (lines 2 and 4); keep one of them"),
    ("yaml-a-folder", ["retrain", "-c", "{bad}/gw_token"], [], 2,
     "config file {bad}/gw_token is a folder; give the YAML file itself"),
    ("lr-infinite", ["retrain"], ["train.lr=inf"], 2,
     "'train.lr': Input should be 'auto' or a finite number; got 'inf'"),
    ("lr-nan", ["retrain"], ["train.lr=.nan"], 2, "'train.lr': Input should be 'auto' or a finite number; got nan"),
    ("temperature-infinite", ["retrain"], ["train.temperature=.inf"], 2,
     "'train.temperature': Input should be a finite number; got inf"),
    # the store, refused when a writing command starts
    ("tracking-uri-missing-folder", ["retrain"], ["stores.tracking_uri=sqlite:///{bad}/no/such/folder/mlflow.db"], 2,
     "/no/such/folder does not exist; create it, or point stores.tracking_uri"),
    ("models-tracking-uri-missing-folder", ["models"], ["stores.tracking_uri=sqlite:///{bad}/absent/mlflow.db"], 2,
     "stores.tracking_uri='sqlite:///{bad}/absent/mlflow.db': the folder {bad}/absent does not exist"),
    ("root-is-a-file", ["refresh"], ["stores.snapshots={bad}/a_file/snapshots"], 2,
     "stores.snapshots: {bad}/a_file is a file, not a folder"),
    # command-line arguments
    ("recommend-k-negative", ["recommend", "--user", "u000001", "-k", "-1"], [], 2,
     "-k -1 is out of range; ask for 1 to 10000 items"),
    ("recommend-k-zero", ["recommend", "--user", "u000001", "-k", "0"], [], 2, "-k 0 is out of range"),
    ("recommend-k-huge", ["recommend", "--user", "u000001", "-k", "1000000000"], [], 2,
     "-k 1000000000 is out of range"),
    ("recommend-unknown-user", ["recommend", "--user", "nobody"], [], 2, "user 'nobody' is not in snapshot"),
    ("generate-out-is-a-file", ["generate", "--out", "{bad}/good.csv"], [], 2,
     "--out {bad}/good.csv is an existing file; give a folder"),
    ("promote-force-without-reason", ["promote", "--version", "1", "--force"], [], 2, "--force needs --reason"),
    # LightGCN text format
    ("gowalla-without-path", ["validate"], ["data.source=gowalla"], 2, "data.source=gowalla needs data.path"),
    ("gowalla-token", ["retrain"], ["data.source=gowalla", "data.path={bad}/gw_token"], 2,
     "gw_token/train.txt, line 2: 'x3' (field 3) is not an integer id"),
    ("gowalla-non-utf8", ["validate"], ["data.source=gowalla", "data.path={bad}/gw_utf8"], 2,
     "gw_utf8/train.txt, line 2: byte 0xff at offset 11 is not UTF-8 text"),
    ("gowalla-float-id", ["validate"], ["data.source=gowalla", "data.path={bad}/gw_float"], 2,
     "line 2: '2.5' (field 2) is not an integer id"),
    ("gowalla-id-overflow", ["validate"], ["data.source=gowalla", "data.path={bad}/gw_overflow"], 2,
     "'99999999999999999999' (field 2) is too large for a 64-bit id"),
    ("gowalla-no-interactions", ["validate"], ["data.source=gowalla", "data.path={bad}/gw_empty"], 2,
     "gw_empty/train.txt holds no interactions"),
    ("gowalla-path-is-a-file", ["validate"], ["data.source=gowalla", "data.path={bad}/good.csv"], 2,
     "data.path={bad}/good.csv is a file; data.source=gowalla reads a folder"),
    ("gowalla-no-test-file", ["validate"], ["data.source=gowalla", "data.path={bad}/gw_notest"], 2,
     "gw_notest/test.txt does not exist"),
    ("gowalla-test-only-ids", ["validate"], ["data.source=gowalla", "data.path={bad}/gw_testonly",
                                             "validation.test_only_ids=fail", "validation.min_interactions_per_user=1"],
     3, "interactions.user_id: expect_held_out_ids_to_occur_in_training_rows - 1 users occur only in held-out"),
    ("refresh-gowalla-test-only-ids", ["refresh"], ["data.source=gowalla", "data.path={bad}/gw_testonly",
                                                    "validation.test_only_ids=fail",
                                                    "validation.min_interactions_per_user=1"],
     3, "1 items occur only in held-out (test/valid) rows"),
    ("lastfm-token", ["validate"], ["data.source=lastfm", "data.path={bad}/lf_token"], 2,
     "lf_token/data1.txt, line 2: 'abc' (field 2) is not an integer id"),
    ("lastfm-non-utf8", ["validate"], ["data.source=lastfm", "data.path={bad}/lf_utf8"], 2,
     "lf_utf8/data1.txt, line 2: byte 0xe9 at offset 8 is not UTF-8 text"),
    ("lastfm-extra-field", ["validate"], ["data.source=lastfm", "data.path={bad}/lf_fields"], 2,
     "lf_fields/data1.txt, line 2: 4 field(s), expected 3"),
    ("lastfm-no-trust-file", ["validate"], ["data.source=lastfm", "data.path={bad}/lf_notrust"], 2,
     "lf_notrust/trustnetwork.txt does not exist"),
    # CSV / Parquet
    ("files-without-interactions", ["validate"], ["data.source=files"], 2, "data.source=files needs data.interactions"),
    ("columns-other-names", ["retrain"], files("other_names.csv"), 2,
     "has no user_id / item_id column; columns found: member, job, ts. Map your names with data.columns, "
     "e.g. --set 'data.columns={member: user_id, job: item_id}'"),
    ("columns-map-absent-column", ["validate"], files("other_names.csv", "data.columns={mem: user_id, job: item_id}"),
     2, "data.columns maps 'mem', which the file does not have"),
    ("csv-non-utf8", ["validate"], files("utf8.csv"), 2, "utf8.csv, line 14: byte 0xff at offset"),
    ("timestamp-word", ["promote", "--version", "1"], files("ts_word.csv"), 2,
     "column 'timestamp': 'yesterday' (row 5, line 7) is not a timestamp; timestamps must be Unix seconds, "
     "Unix milliseconds"),
    ("timestamp-mixed-units", ["validate"], files("ts_mixed.csv"), 2,
     "1700000000000 (row 2, line 4) reads as milliseconds but 1700000660 (row 0) as seconds"),
    ("timestamp-microseconds", ["validate"], files("ts_micro.csv"), 2,
     "is too large for seconds or milliseconds (micro- or nanoseconds?)"),
    ("timestamp-day-first", ["validate"], files("ts_dayfirst.csv"), 2,
     "'30/11/2026' (row 0, line 2) is not a timestamp"),
    ("json-file", ["validate"], files("log.json"), 2, "log.json must be .csv, .tsv, .txt or .parquet (got .json)"),
    ("empty-file", ["refresh"], files("empty.csv"), 2, "the interactions file {bad}/empty.csv is empty"),
    ("missing-file", ["validate"], files("absent.csv"), 2, "{bad}/absent.csv does not exist"),
    ("data-file-is-a-folder", ["retrain"], files("gw_token"), 2,
     "{bad}/gw_token is a folder; give the data file itself"),
    ("corrupt-parquet", ["validate"], files("corrupt.parquet"), 2, "corrupt.parquet cannot be read"),
    ("users-without-id", ["validate"], files("good.csv", "data.users={bad}/users_noid.csv"), 2,
     "the users file {bad}/users_noid.csv has no user_id column; columns found: member, title"),
    ("social-without-ends", ["validate"], files("good.csv", "data.social={bad}/social_noends.csv"), 2,
     "the social file {bad}/social_noends.csv has no src / dst column; columns found: a, b"),
    # data that loads but fails validation
    ("null-user-id", ["validate"], files("null_user.csv"), 3,
     "interactions.user_id: expect_column_values_to_not_be_null"),
    ("item-not-in-items-table", ["retrain"], files("good.csv", "data.items={bad}/items_short.csv"), 3,
     "interactions.item_id: expect_column_values_to_be_in_id_table"),
    ("negative-timestamp", ["validate"], files("negative_ts.csv"), 3,
     "interactions.timestamp: expect_column_values_to_be_between - expected between 0.0 and 4102444800.0 - 1 rows "
     "(8.33%) - e.g. -5"),
    ("duplicate-rows", ["validate"], files("duplicate.csv"), 3, "expect_compound_columns_to_be_unique"),
    ("too-few-items-per-user", ["validate"], files("few.csv"), 3,
     "user_activity.distinct_items: expect_column_values_to_be_between - expected between 3"),
    ("social-unknown-user", ["validate"], files("good.csv", "data.social={bad}/social_unknown.csv"), 3,
     "social.dst: expect_column_values_to_be_in_id_table"),
]


@pytest.mark.parametrize("argv, sets, code, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(store, bad, capsys, argv, sets, code, fragment):
    def fill(text: str) -> str:
        return text.replace("{bad}", str(bad)).replace("{store}", str(store))

    before = state(store)
    capsys.readouterr()
    got = run(store, [fill(a) for a in argv], tuple(fill(s) for s in sets))
    out = capsys.readouterr()
    message = out.err + out.out
    assert got == code, message
    assert fill(fragment) in message
    assert state(store) == before


def test_the_battery_is_large_enough():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("what", ["folder", "database"])
def test_a_read_only_store_is_refused_before_anything_starts(capsys, what):
    """A store graphrec cannot write (a folder or an MLflow database without write permission,
    used as an unprivileged user when the tests run as root) is named at the start, not 800
    lines of "readonly database" later."""
    base = Path(tempfile.mkdtemp(prefix="graphrec-ro-"))
    root = base / ".graphrec"
    try:
        base.chmod(0o755)
        root.mkdir()
        if what == "database":
            (root / "mlflow.db").write_bytes(b"")
            (root / "mlflow.db").chmod(0o444)
            root.chmod(0o777)
            expected = f"the MLflow database {root / 'mlflow.db'} cannot be written (Permission denied)"
        else:
            root.chmod(0o555)
            expected = f"stores.root: the folder {root} is not writable (Permission denied)"
        before = sorted(p.name for p in root.iterdir())
        capsys.readouterr()
        switch = os.geteuid() == 0
        if switch:
            os.seteuid(65534)  # nobody: root would write anyway
        try:
            got = run(root, ["retrain"])
        finally:
            if switch:
                os.seteuid(0)
        err = capsys.readouterr().err
        assert got == 2, err
        assert expected in err
        assert sorted(p.name for p in root.iterdir()) == before  # nothing started: no prefect/, no snapshots/
    finally:
        root.chmod(0o755)
        shutil.rmtree(base)


@pytest.mark.parametrize("pointer", [b"", b"\n", b"\xff\xfe garbage \x00\n", b"../../etc\n", b"no-such-snapshot\n"],
                         ids=["empty", "newline", "binary", "path", "unknown-name"])
def test_a_broken_current_serves_the_newest_intact_snapshot(store, capsys, pointer):
    cfg = load_config(None, [f"stores.root={store}"])
    snapshots = cfg.stores.resolved_snapshots()
    good = current_name(snapshots)
    original = (snapshots / "CURRENT").read_bytes()
    before = state(store)
    (snapshots / "CURRENT").write_bytes(pointer)
    try:
        capsys.readouterr()
        assert run(store, ["recommend", "--user", "u000001", "-k", "3"]) == 0
        out = capsys.readouterr()
        assert f"snapshot {good})" in out.out and "top 3 for user u000001" in out.out
        assert "warning:" in out.err and "instead" in out.err and good in out.err
        assert (snapshots / "CURRENT").read_bytes() == pointer  # reading never rewrites the pointer
    finally:
        (snapshots / "CURRENT").write_bytes(original)
    assert state(store) == before


def test_a_missing_current_without_snapshots_still_says_what_to_do(tmp_path, capsys):
    assert run(tmp_path, ["recommend", "--user", "u1"]) == 2
    assert "no snapshot yet" in capsys.readouterr().err


def test_a_pipe_as_the_data_file_is_refused_not_read_as_missing():
    out = subprocess.run([sys.executable, "-m", "flows.cli", "validate", "--set", "data.source=files",
                          "--set", "data.interactions=/dev/stdin"], cwd=REPO, input="user_id,item_id\n",
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "is not a regular file (a pipe" in out.stderr and "Traceback" not in out.stderr


def test_a_retrain_says_which_ids_occur_only_in_test_rows(bad, tmp_path, capsys):
    """Validation passes them with a warning (validation.test_only_ids=warn): the retrain's own
    output says so too, not only `graphrec validate` and the artifact."""
    root = tmp_path / "store"
    prepare_prefect(root)
    assert run(root, ["retrain"], ("data.source=gowalla", f"data.path={bad}/gw_testonly",
                                   "validation.min_interactions_per_user=1", "data.split.valid_fraction=0",
                                   "promotion.split=test")) == 0
    out = capsys.readouterr().out
    assert "data warning: interactions.item_id: expect_held_out_ids_to_occur_in_training_rows" in out
    assert "1 items occur only in held-out (test/valid) rows" in out
