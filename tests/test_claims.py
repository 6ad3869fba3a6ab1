"""The claims report's wiring: nine claims, each with arms and a verdict that refuses failed runs.
(The experiments themselves run in bench/claims.py, not here.)"""
from bench.claims import all_claims, section
from bench.runner import settle


def test_nine_claims_each_with_labelled_arms_and_a_verdict_that_refuses_failures():
    claims = all_claims()
    assert [c.id for c in claims] == list(range(1, 10))
    for c in claims:
        arms = [s["arm"] for s in c.specs]
        assert arms and len(set(arms)) == len(arms), c.id
        assert c.columns and c.claim and c.protocol and c.data
        held, why = settle([{**s, "error": "Traceback ...\nRuntimeError: boom"} for s in c.specs], c.verdict)
        assert held is False and "failed" in why, (c.id, why)


def test_a_section_shows_every_arm_and_the_verdict():
    entry = {"id": 1, "title": "t", "claim": "c", "data": "d", "protocol": "p", "held": False,
             "verdict": "v 0.1", "columns": ["recall@20"], "seconds": 3.0, "date": "2026", "mlflow_run_id": "abc",
             "rows": [{"arm": "a", "recall@20": 0.12345}, {"arm": "b", "error": "x\nValueError: bad"}]}
    text = section(entry)
    assert "did not hold" in text and "| a | 0.1235 |" in text and "failed: ValueError: bad" in text


def test_arms_that_crash_are_reported_as_failed_not_held(capsys):
    from bench.claim_mmoe import specs, verdict
    from bench.runner import run_arms

    rows = run_arms("bench.no_such_claim_module", specs()[:1], verdict)
    assert "No module named" in rows[0]["error"]
    assert "did not hold: arm(s)" in capsys.readouterr().out
