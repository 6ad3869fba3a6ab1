"""The synthetic network N days later (`data.synthetic.day`): the same members, jobs and tastes as
day 0 (recsys/data/synthetic.py, same seed), then, day by day:

* a share of the members leave (`gone_members`): their profile, friendships and interactions go;
* new members join (`new_members`, a share of day 0's count) with profiles, tastes and friends drawn
  as day 0's were (friends among the members of their university or company), and view jobs as a
  day-0 member does;
* new jobs are posted (`new_jobs`);
* every member with interactions views `views_per_member` more jobs on average (Poisson), drawn by
  the same appeal as on day 0 from every job there is, within that day, after every earlier view;
  views become clicks and applications as on day 0 (hours and days after the view).

With `candidates` (a large catalogue), day 0 draws each block of members' views from its own random
jobs (recsys.data.synthetic.Pools). A later day keeps that: a member views from their block's jobs,
which gain each job posted since with the share of the catalogue a pool holds on day 0, and new
members form blocks of their own, with pools drawn as day 0's are. (Before RULE 2 a later day drew
fresh pools, so a member's views moved overnight to jobs unrelated to their history.)

Day N's draws come from a Generator seeded by (seed, N), so day N is the same data set whichever
day was generated before it.
"""
from __future__ import annotations

import inspect

import numpy as np
import pandas as pd

from recsys.data.synthetic import (
    BLOCK,
    SPAN,
    START,
    Latent,
    Pools,
    _funnel,
    _jobs,
    _member_profiles,
    _member_taste,
    _views,
    block_views,
    network,
)
from recsys.data.types import RecData

DAY = 86400
RULE = 2  # the version of the later days' draws: generated data sets kept on disk key on it


def generate_day(day: int, days: dict, **settings) -> RecData:
    """The network of `settings` (generate's keyword arguments) on day `day`, grown by `days`'
    shares (data.synthetic.days); day 0 is generate's own."""
    settings = {**_NETWORK, **{k: v for k, v in settings.items() if k in _NETWORK}}
    data, latent = network(**settings)
    if day == 0:
        return data
    grown = _Grown(data, latent)
    for k in range(1, day + 1):
        grown.one_day(np.random.default_rng([settings["seed"], k]), k, days, settings)
    return grown.data(day)


_NETWORK = {name: p.default for name, p in inspect.signature(network).parameters.items()}  # network's defaults


class _Grown:
    """The network as it grows: tables, each member's and job's vectors, who is still there."""

    def __init__(self, data: RecData, latent: Latent):
        self.base, self.latent = data, latent
        self.users, self.items = data.users, data.items
        self.inter, self.social = [data.interactions], [data.social]
        self.u_uni, self.u_company, self.taste = latent.u_uni, latent.u_company, latent.taste
        self.j_vec, self.popularity = latent.j_vec, latent.popularity
        self.present = np.ones(len(self.users), dtype=bool)
        self.active = ~latent.cold_users  # members who interact
        self.open_jobs = ~latent.cold_items
        self.pools = None if latent.pools is None else Pools(latent.pools.block.copy(), list(latent.pools.jobs))
        # the share of day 0's open jobs a pool holds: each job posted later joins a pool with it
        self.share = 0.0 if latent.pools is None else len(latent.pools.jobs[0]) / int(self.open_jobs.sum())

    def one_day(self, rng: np.random.Generator, k: int, days: dict, settings: dict) -> None:
        n0, m0 = settings["n_users"], settings["n_items"]
        here = np.flatnonzero(self.present)
        gone = rng.choice(here, size=int(round(len(here) * days["gone_members"])), replace=False)
        self.present[gone] = False
        first = len(self.users)
        new = self._join(rng, int(round(n0 * days["new_members"])), settings["friends_per_user"])
        posted = len(self.items)
        self._post(rng, int(round(m0 * days["new_jobs"])))
        viewers = np.flatnonzero(self.present & self.active)
        counts = rng.poisson(days["views_per_member"], size=len(viewers))
        fresh = viewers >= first  # new members start with a day-0 member's history
        counts[fresh] = 5 + rng.poisson(max(settings["mean_interactions"] - 5, 0.1), size=int(fresh.sum()))
        if self.pools is None:
            pu, pi, ps, _ = _views(rng, self.taste, self.j_vec, self.popularity, viewers,
                                   np.flatnonzero(self.open_jobs), settings["mean_interactions"], None, counts)
        else:
            self.pools = self._grow_pools(rng, self.pools, new, np.arange(posted, len(self.items)),
                                          settings["candidates"])
            pu, pi, ps = self._pooled_views(rng, self.pools, viewers, counts)
        self.inter.append(_funnel(rng, pu, pi, ps, self.users["user_id"].to_numpy(), self.items["item_id"].to_numpy(),
                                  start=START + SPAN + (k - 1) * DAY, span=DAY))
        self.added = getattr(self, "added", 0) + len(new)

    def _join(self, rng: np.random.Generator, n: int, friends_per_user: float) -> np.ndarray:
        """n new members: profiles and tastes as day 0 draws them, friends in their university or company."""
        world, first = self.latent.world, len(self.users)
        u_uni, u_company, u_field, taste = _member_taste(rng, world, n)
        ids = np.arange(first, first + n)
        self.u_uni, self.u_company = np.r_[self.u_uni, u_uni], np.r_[self.u_company, u_company]
        self.present, self.active = np.r_[self.present, np.ones(n, bool)], np.r_[self.active, np.ones(n, bool)]
        edges = np.unique(np.concatenate([_friends_within(rng, group, self.present, ids, friends_per_user / 4)
                                          for group in (self.u_uni, self.u_company)]), axis=0)
        known = np.r_[self.taste, taste]
        pulled, degree = np.zeros_like(known), np.zeros(len(known))
        np.add.at(pulled, edges[:, 0], known[edges[:, 1]])
        np.add.at(degree, edges[:, 0], 1.0)
        has = degree > 0  # 30% towards their friends, as day 0's members are
        known[has] = 0.7 * known[has] + 0.3 * pulled[has] / degree[has, None]
        self.taste = known
        self.users = pd.concat([self.users, _member_profiles(rng, world, u_uni, u_company, u_field, first=first)],
                               ignore_index=True)
        ids_text = self.users["user_id"].to_numpy()
        self.social.append(pd.DataFrame({"src": ids_text[edges[:, 0]], "dst": ids_text[edges[:, 1]]}))
        return ids

    def _grow_pools(self, rng: np.random.Generator, grown: Pools, members: np.ndarray, jobs: np.ndarray,
                    candidates: int) -> Pools:
        """`grown`, each block's pool gaining each of the `jobs` just posted with day 0's share, and new
        `members` in blocks of their own, each with `candidates` random open jobs (as day 0 draws a pool)."""
        block, pools = grown.block, grown.jobs
        joins = rng.random((len(pools), len(jobs))) < self.share
        pools = [np.r_[pool, jobs[joined]] for pool, joined in zip(pools, joins)]
        open_jobs = np.flatnonzero(self.open_jobs)
        block = np.r_[block, np.full(len(self.taste) - len(block), -1)]
        for start in range(0, len(members), BLOCK):
            block[members[start:start + BLOCK]] = len(pools)
            pools.append(np.sort(rng.choice(open_jobs, size=min(candidates, len(open_jobs)), replace=False)))
        return Pools(block, pools)

    def _pooled_views(self, rng: np.random.Generator, pools: Pools, viewers: np.ndarray, counts: np.ndarray):
        """The day's views, block by block from the block's open jobs (block_views)."""
        block_of: np.ndarray = pools.block[viewers]
        by_block = np.argsort(block_of, kind="stable")
        blocks, starts = np.unique(block_of[by_block], return_index=True)
        views = []
        for b, members in zip(blocks, np.split(by_block, starts[1:])):
            pool = pools.jobs[b][self.open_jobs[pools.jobs[b]]]
            views.append(block_views(rng, self.taste, self.j_vec, self.popularity, viewers[members], pool,
                                     counts[members]))
        return tuple(np.concatenate(v) for v in zip(*views))

    def _post(self, rng: np.random.Generator, m: int) -> None:
        jobs, j_vec, popularity = _jobs(rng, self.latent.world, m, first=len(self.items))
        self.items = pd.concat([self.items, jobs], ignore_index=True)
        self.j_vec, self.popularity = np.r_[self.j_vec, j_vec], np.r_[self.popularity, popularity]
        self.open_jobs = np.r_[self.open_jobs, np.ones(m, bool)]

    def data(self, day: int) -> RecData:
        """Day `day`'s tables: members who left are gone with their friendships and interactions."""
        left = set(self.users["user_id"].to_numpy()[~self.present])
        inter = pd.concat(self.inter, ignore_index=True)
        inter = inter[~inter["user_id"].isin(left)].reset_index(drop=True)
        social = pd.concat(self.social, ignore_index=True)
        social = social[~social["src"].isin(left) & ~social["dst"].isin(left)].reset_index(drop=True)
        users = self.users[self.present].reset_index(drop=True)
        meta = {**self.base.meta, "day": day, "members_joined": int(self.added), "members_gone": len(left),
                "jobs_posted": len(self.items) - len(self.base.items)}
        return RecData("synthetic", users, self.items, inter, social, meta)


def _friends_within(rng: np.random.Generator, group: np.ndarray, present: np.ndarray, members: np.ndarray,
                    per_member: float) -> np.ndarray:
    """(member, friend) pairs: a Poisson(per_member) number of friends for each of `members`, drawn
    among the present members of its own group (its university or company)."""
    candidates = np.flatnonzero(present)
    order = candidates[np.argsort(group[candidates], kind="stable")]
    ranked = group[order]
    lo = np.searchsorted(ranked, group[members], "left")
    hi = np.searchsorted(ranked, group[members], "right")  # > lo: a member is present in its own group
    counts = rng.poisson(per_member, size=len(members))
    src, lo, hi = np.repeat(members, counts), np.repeat(lo, counts), np.repeat(hi, counts)
    friend = order[lo + (rng.random(len(src)) * (hi - lo)).astype(np.int64)]
    keep = friend != src
    return np.stack([src[keep], friend[keep]], axis=1).astype(np.int64)
