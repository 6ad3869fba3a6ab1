"""The synthetic network's later days (recsys/data/next_day.py): day 0 is the embedded data set
itself; a later day keeps what stayed, adds members, jobs and views after every earlier view, drops
who left with their traces, and is the same whenever it is generated."""
import numpy as np
import pandas as pd

from recsys.data.next_day import generate_day
from recsys.data.synthetic import generate

SMALL = dict(n_users=300, n_items=150, n_universities=4, n_companies=8, mean_interactions=12.0,
             friends_per_user=8.0, cold_user_fraction=0.05, cold_item_fraction=0.05, seed=3, candidates=None)
GROWTH = {"new_members": 0.1, "new_jobs": 0.1, "gone_members": 0.05, "views_per_member": 3.0}


def _same(a, b) -> bool:
    return all(x.reset_index(drop=True).equals(y.reset_index(drop=True))
               for x, y in ((a.users, b.users), (a.items, b.items), (a.interactions, b.interactions),
                            (a.social, b.social)))


def test_day_zero_is_the_network_itself_and_a_day_is_the_same_whenever_drawn():
    assert _same(generate_day(0, GROWTH, **SMALL), generate(**SMALL))
    assert _same(generate_day(2, GROWTH, **SMALL), generate_day(2, GROWTH, **SMALL))
    assert not _same(generate_day(2, GROWTH, **SMALL), generate_day(2, GROWTH, **{**SMALL, "seed": 4}))


def test_a_later_day_grows_the_network_and_forgets_who_left():
    day0, day2 = generate(**SMALL), generate_day(2, GROWTH, **SMALL)
    assert day2.meta["members_joined"] == 2 * 30 and day2.meta["jobs_posted"] == 2 * 15
    assert day2.meta["members_gone"] == 15 + 16  # 5% of the 300, then of the 315 there were on day 2
    users, items = set(day2.users["user_id"]), set(day2.items["item_id"])
    assert len(users) == 300 + 60 - 31 and len(items) == 150 + 30
    left = set(day0.users["user_id"]) - users
    assert len(left) + len([u for u in users if u not in set(day0.users["user_id"])]) == 31 + 60
    assert not (set(day2.interactions["user_id"]) - users) and not (set(day2.interactions["item_id"]) - items)
    assert not (set(day2.social["src"]) | set(day2.social["dst"])) - users
    # what stayed is kept as it was; what is new comes after everything on day 0
    kept = day0.interactions[~day0.interactions["user_id"].isin(left)]
    merged = kept.merge(day2.interactions, how="left", indicator=True)
    assert (merged["_merge"] == "both").all()
    new = day2.interactions.merge(day0.interactions, how="left", indicator=True)
    new = new[new["_merge"] == "left_only"]
    views = day0.interactions[day0.interactions["event"] == "view"]
    assert len(new) and new[new["event"] == "view"]["timestamp"].min() > views["timestamp"].max()
    joined = [u for u in users if u not in set(day0.users["user_id"])]
    assert set(joined) <= set(new["user_id"]) | set(day2.users["user_id"])  # ids continue, no reuse
    assert pd.Series(sorted(users)).is_unique


def test_with_candidates_a_later_day_draws_from_each_members_day_0_jobs_and_those_posted_since():
    """A large catalogue's day 0 draws each block of members' views from its own random jobs
    (recsys.data.synthetic.Pools); a later day keeps each member's jobs, so their history still
    predicts them. Checked view by view against the pools day 0 drew."""
    from recsys.data.synthetic import network

    settings = {**SMALL, "candidates": 40}
    day0, latent = network(**settings)
    day2 = generate_day(2, GROWTH, **settings)
    members = {u: i for i, u in enumerate(day0.users["user_id"])}
    jobs = {j: i for i, j in enumerate(day2.items["item_id"])}
    new = day2.interactions.merge(day0.interactions, how="left", indicator=True)
    new = new[(new["_merge"] == "left_only") & new["user_id"].isin(members)]
    assert len(new) > 100
    member, job = new["user_id"].map(members).to_numpy(), new["item_id"].map(jobs).to_numpy()
    block = latent.pools.block[member]
    assert (block >= 0).all()
    in_pool = np.array([j in set(latent.pools.jobs[b]) for b, j in zip(block, job)])
    posted = job >= len(day0.items)
    assert (in_pool | posted).all()  # every later view: the member's day-0 jobs or a job posted since
    assert in_pool.mean() > 0.5 and posted.any()
    # without candidates there are no pools, and a later day draws from every job as before
    assert network(**SMALL)[1].pools is None
