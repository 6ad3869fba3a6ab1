"""bench/retrain_scale/ without running the flow: ratios, goals, merged rows, the table, and that a
child is never waited on past its bound."""
import json
import sys

from bench import common, runner
from bench import retrain_scale as rs


def row(family, members, interactions, epoch, flow, rss=1000, settings=()):
    return {"family": family, "members": members, "settings": list(settings), "interactions": interactions,
            "friendships": members, "epoch_seconds": epoch, "epoch_stage": "ranking",
            "stage_epoch_seconds": {"ranking": epoch}, "flow_seconds": flow, "total_seconds": flow,
            "epochs": 2, "best_epoch": 2,
            "phase_seconds": {p: flow / len(rs.PHASES) for p in rs.PHASES}, "peak_rss_mb": rss,
            "recall@20": 0.1, "ndcg@20": 0.05}


def test_ratios_and_goals():
    rows = [row("lightgcn", 100_000, 1_000, 10.0, 600), row("lightgcn", 300_000, 3_000, 30.0, 1500),
            row("lightgcn", 1_000_000, 10_000, 150.0, 3000, rss=12 * 1024),
            row("mf", 100_000, 1_000, 1.0, 100), row("mf", 1_000_000, 10_000, 20.0, 900)]
    ratios = {(r["family"], r["to_members"]): r for r in rs.ratios(rows)}
    assert ratios["lightgcn", 300_000]["epoch_seconds"] == 1.0
    assert ratios["lightgcn", 1_000_000]["epoch_seconds"] == 1.5
    assert ratios["mf", 1_000_000]["epoch_seconds"] == 2.0 and ratios["mf", 1_000_000]["flow_seconds"] == 0.9
    (end_to_end,) = [g for g in rs.goals(rows) if "end to end" in g["goal"]]
    assert end_to_end["held"] is True and end_to_end["figure"] == "50.0 min, 12.0 GiB"
    epoch_goals = [g for g in rs.goals(rows) if "seconds per epoch" in g["goal"]]
    assert {g["goal"].split(":")[0]: g["held"] for g in epoch_goals} == {"lightgcn": False, "mf": False}
    summary = rs.headline(rows, rs.ratios(rows))
    assert summary["lightgcn_1m_total_seconds"] == 3000 and summary["lightgcn_1m_peak_rss_mb"] == 12 * 1024
    # epoch growth 100k -> 1M: lightgcn 15x for 10x interactions, mf 20x: the worst is mf's 2.0
    assert summary["epoch_growth_vs_linear"] == {"lightgcn": 1.5, "mf": 2.0}
    assert summary["worst_epoch_growth_vs_linear"] == 2.0


def test_an_epoch_budget_is_compared_for_cost_but_other_settings_are_not():
    rows = [row("lightgcn", 100_000, 1_000, 10.0, 600, settings=["train.epochs=2"]),
            row("lightgcn", 1_000_000, 10_000, 120.0, 3300, settings=["train.epochs=10"]),
            row("lightgcn", 1_000_000, 10_000, 50.0, 900, settings=["train.max_steps_per_epoch=8"])]
    rows[1]["epochs"] = 10
    summary = rs.headline(rows, rs.ratios(rows))
    short = row("lightgcn", 1_000_000, 10_000, 110.0, 500, settings=["train.epochs=2"])
    assert rs.headline([short, *rows], [])["lightgcn_1m_settings"] == ["train.epochs=10"]  # the longest budget
    # the budgeted 1M row is the end-to-end figure and compares with the 100k row: 12x for 10x
    assert summary["lightgcn_1m_total_seconds"] == 3300 and summary["lightgcn_1m_settings"] == ["train.epochs=10"]
    assert summary["epoch_growth_vs_linear"] == {"lightgcn": 1.2}
    (end_to_end,) = [g for g in rs.goals(rows) if "end to end" in g["goal"]]
    assert end_to_end["held"] and end_to_end["settings"] == "train.epochs=10"
    (ratio,) = rs.ratios(rows)
    assert (ratio["from_members"], ratio["to_members"], ratio["epoch_seconds"]) == (100_000, 1_000_000, 1.2)
    table = rs.table(rows, rs.ratios(rows))
    assert [r[4] for r in table if r[1] == "1,000,000" and r[-1] == "train.epochs=10"] == ["1.20"]


def test_the_latest_rows_of_a_size_are_compared():
    old_small = row("lightgcn", 100_000, 1_000, 30.0, 600, settings=["train.epochs=10"])
    old_small["epochs"] = 10  # more epochs, but measured before (the host was slower then)
    small = {**row("lightgcn", 100_000, 1_000, 10.0, 600, settings=["train.epochs=2"]),
             "measured_at": "2026-12-01T06:30:00+00:00"}
    big = {**row("lightgcn", 1_000_000, 10_000, 110.0, 900, settings=["train.epochs=2"]),
           "measured_at": "2026-12-01T06:40:00+00:00"}
    assert rs.headline([old_small, small, big], [])["epoch_growth_vs_linear"] == {"lightgcn": 1.1}


def test_the_bounded_mode_is_compared_with_the_exact_one_on_the_same_budget():
    bounded = row("lightgcn", 100_000, 1_000, 10.0, 600, settings=["train.epochs=10"])
    exact = row("lightgcn", 100_000, 1_000, 40.0, 2000, settings=["train.epochs=10", rs.EXACT])
    other_budget = row("lightgcn", 100_000, 1_000, 40.0, 2000, settings=["train.epochs=4", rs.EXACT])
    bounded["recall@20"], exact["recall@20"] = 0.049, 0.05
    (v,) = rs.versus_exact([bounded, exact, other_budget])
    assert v["budget"] == "train.epochs=10" and v["recall_share"] == 0.98
    assert (v["bounded_recall@20"], v["exact_recall@20"]) == (0.049, 0.05)
    assert rs.headline([bounded, exact], [])["lightgcn_100k_vs_exact"] == [v]


def test_failed_rows_render_and_merge_by_family_size_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    failed = {"family": "gcn", "members": 5000, "settings": [], "interactions": 80,
              "error": "killed by SIGKILL (out of memory?); log x\ntraceback"}
    table = rs.table([row("mf", 5000, 80, 1.0, 10), failed], [])
    assert all(len(r) == len(rs.HEADER) for r in table)
    assert any("failed: killed by SIGKILL" in str(c) for c in table[0] + table[1])
    (tmp_path / "t.json").write_text(json.dumps({"rows": [row("mf", 5000, 80, 9.0, 10), failed,
                                                          row("mf", 5000, 80, 9.0, 10, settings=["train.epochs=2"])]}))
    merged = rs.merged("t", [row("mf", 5000, 80, 1.0, 10)])
    assert sorted((r["family"], r.get("epoch_seconds")) for r in merged) == [("gcn", None), ("mf", 1.0), ("mf", 9.0)]


def test_a_child_past_its_bound_is_stopped(tmp_path):
    code, seconds = runner.run_bounded([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "c.log", 1)
    assert code is None and seconds < 30
    assert "ran past --timeout" in runner.failure(code, 1, tmp_path / "c.log")
    code, _ = runner.run_bounded([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                             tmp_path / "k.log", 30)
    assert runner.failure(code, 30, tmp_path / "k.log").startswith("killed by SIGKILL (out of memory?)")


def test_a_family_without_a_1m_flow_row_is_judged_on_the_probes_of_its_default_mode():
    def probe(family, members, interactions, projected, mode="per-batch", at="2026-12-01T08:00:00+00:00"):
        return {"family": family, "members": members, "interactions": interactions, "steps_measured": 300,
                "projected_epoch_seconds": projected, "mode": mode, "measured_at": at}

    for family in ("lightgcn", "sage", "pinsage"):  # pinsage: its own bound, 1024 steps
        assert rs.family_mode(family) == "bounded"
    assert rs.family_mode("llm") == "prefix"  # its probes time the prefix stage
    probes = [probe("sage", 100_000, 1_000, 70.0, "bounded"), probe("sage", 1_000_000, 10_000, 840.0, "bounded"),
              probe("sage", 1_000_000, 10_000, 9_000.0, "bounded", at="2026-11-30T08:00:00+00:00"),  # older: replaced
              probe("pinsage", 100_000, 1_000, 200.0, "bounded"),  # no 1M probe: no goal
              probe("lightgcn", 100_000, 1_000, 400.0), probe("lightgcn", 1_000_000, 10_000, 20_000.0)]
    (goal,) = [g for g in rs.goals([], probes) if "probes" in g["goal"]]
    assert goal["goal"].startswith("sage:") and goal["figure"] == 1.2 and goal["held"]
    # lightgcn's probes are of its exact (per-batch) mode, not its default: they judge nothing
    assert rs.headline([], [], probes)["epoch_growth_vs_linear"] == {"sage (probes)": 1.2}
    assert rs.probe_growth(probes + [probe("sage", 300_000, 3_000, 300.0, "bounded")]) == {
        "pinsage": [], "sage": [(100_000, 300_000, 1.429), (300_000, 1_000_000, 0.84)]}


def test_a_terminated_bench_ends_its_child(tmp_path):
    """SIGTERM to the bench (`kill`) ends the child it waits on, as Ctrl-C does."""
    import os
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "child.pid"
    (tmp_path / "child.py").write_text(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)\n")
    (tmp_path / "runner.py").write_text(
        "import signal, sys\nfrom pathlib import Path\nfrom bench import runner as r\n"
        "signal.signal(signal.SIGTERM, r.interrupted)\n"
        f"r.run_bounded([sys.executable, {str(tmp_path / 'child.py')!r}], Path({str(tmp_path / 'c.log')!r}), 600)\n")
    bench = subprocess.Popen([sys.executable, str(tmp_path / "runner.py")], cwd=runner.REPO, start_new_session=True,
                             env={**os.environ, "PYTHONPATH": str(runner.REPO)})
    child = None
    try:
        for _ in range(600):  # the child has started (bounded: 60 s)
            if pid_file.is_file() and pid_file.read_text():
                child = int(pid_file.read_text())
                break
            time.sleep(0.1)
        assert child is not None, "the child never started"
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(120) != 0
        for _ in range(600):  # the child is gone (its group got SIGTERM; SIGKILL after 60 s)
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the child outlived the bench")
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(30)
        if child is not None:
            try:
                os.killpg(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_the_epoch_growth_of_a_family_with_heads_is_its_worst_stage():
    a, b = row("mmoe", 100_000, 1_000, 10.0, 100), row("mmoe", 300_000, 3_000, 30.0, 300)
    a["stage_epoch_seconds"] = {"ranking": 10.0, "head": 20.0}
    b["stage_epoch_seconds"] = {"ranking": 30.0, "head": 72.0}  # the heads grow 1.2x linear
    assert rs.epoch_growth(a, b) == 1.2
    (goal,) = [g for g in rs.goals([a, b]) if "seconds per epoch" in g["goal"]]
    assert goal["figure"] == 1.2 and goal["held"]
