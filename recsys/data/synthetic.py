"""A synthetic professional network: the embedded default data set.

Members have a university, a company, a job title and a headline; jobs have a title, a company
and a description. Who interacts with which job is driven by latent taste vectors built so that a
graph model has something to find that popularity cannot:

* every member and job belongs to a professional field; a member's taste is the field's vector
  plus pulls from their university and company (homophily: classmates and colleagues look alike),
  then smoothed over their friends;
* friendships form mostly within a university or a company;
* a job's appeal is its field and company vector plus a popularity term;
* each warm member views a Poisson number of jobs drawn by Gumbel-top-k over the appeal (a sample
  without replacement from softmax(appeal)); some views become clicks and some clicks applications,
  more often the better the match;
* a share of members and jobs are cold: profiles and friendships, but no interactions at all.

Everything is drawn from one numpy Generator, so a seed fixes the data set exactly.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import pandas as pd

from recsys.data.types import RecData

FIELDS = {
    "software engineering": (
        ["Software Engineer", "Backend Developer", "Site Reliability Engineer"],
        ["Python", "Go", "Kubernetes", "distributed systems", "APIs", "PostgreSQL", "CI/CD", "Rust"],
    ),
    "data science": (
        ["Data Scientist", "Machine Learning Engineer", "Data Analyst"],
        ["statistics", "PyTorch", "SQL", "experimentation", "forecasting", "recommender systems", "Spark",
         "causal inference"],
    ),
    "product": (
        ["Product Manager", "Product Owner", "Program Manager"],
        ["roadmaps", "user research", "prioritisation", "OKRs", "agile", "stakeholder management", "analytics",
         "pricing"],
    ),
    "design": (
        ["Product Designer", "UX Researcher", "Visual Designer"],
        ["Figma", "prototyping", "design systems", "usability testing", "illustration", "accessibility", "typography",
         "motion"],
    ),
    "marketing": (
        ["Marketing Manager", "Growth Marketer", "Content Strategist"],
        ["SEO", "campaigns", "brand", "copywriting", "paid social", "lifecycle email", "market research", "events"],
    ),
    "sales": (
        ["Account Executive", "Sales Development Rep", "Customer Success Manager"],
        ["negotiation", "CRM", "enterprise sales", "pipeline", "onboarding", "renewals", "prospecting", "demos"],
    ),
    "finance": (
        ["Financial Analyst", "Accountant", "Controller"],
        ["Excel", "budgeting", "audit", "IFRS", "valuation", "treasury", "reporting", "tax"],
    ),
    "healthcare": (
        ["Nurse", "Clinical Researcher", "Health Data Manager"],
        ["patient care", "clinical trials", "EHR", "compliance", "epidemiology", "pharmacology", "triage",
         "public health"],
    ),
}
CITIES = ["Aldridge", "Brenmoor", "Calder", "Dunhaven", "Eastwick", "Fairholt", "Glenmere", "Harrow",
          "Ivybridge", "Kestrel", "Lowell", "Marston", "Northam", "Oakridge", "Penrith", "Queensferry",
          "Redcliff", "Stanmore", "Thornbury", "Umberleigh", "Vale", "Westbury", "Yarrow", "Zennor"]
COMPANY_WORDS = (["North", "Blue", "Silver", "Bright", "Iron", "Cedar", "Quantum", "Harbor", "Summit", "Nova",
                  "Atlas", "Pine", "Coral", "Vector", "Lumen", "Granite"],
                 ["Labs", "Systems", "Health", "Analytics", "Works", "Capital", "Networks", "Studio", "Logistics",
                  "Bank", "Media", "Robotics"])
SENIORITY = ["Junior", "", "Senior", "Lead"]
EVENTS = ("view", "click", "apply")
START = 1735689600  # 2025-01-01 UTC
SPAN = 180 * 86400
BLOCK = 1024  # members whose views are drawn together (from one pool of jobs, with `candidates`)


class _World(NamedTuple):
    """The shared latent structure: fields, universities and companies, with their names and vectors."""

    field_names: list[str]
    universities: list[str]
    companies: list[str]
    field_vec: np.ndarray  # (fields, dim)
    uni_vec: np.ndarray  # (universities, dim)
    company_vec: np.ndarray  # (companies, dim)
    uni_fields: np.ndarray  # (universities, fields): each university's lean towards the fields
    company_fields: np.ndarray  # (companies, fields)


class Latent(NamedTuple):
    """What drew the network, for its later days (recsys/data/next_day.py): members' and jobs' vectors."""
    world: _World
    u_uni: np.ndarray
    u_company: np.ndarray
    taste: np.ndarray
    j_vec: np.ndarray
    popularity: np.ndarray
    cold_users: np.ndarray
    cold_items: np.ndarray
    pools: Optional["Pools"] = None  # with `candidates`: the jobs each member's views come from


def generate(**settings) -> RecData:
    """The synthetic network for these settings (`network`'s keyword arguments, see the module
    docstring); one seed, one data set."""
    return network(**settings)[0]


def network(
    n_users: int = 2000,
    n_items: int = 800,
    n_universities: int = 12,
    n_companies: int = 40,
    mean_interactions: float = 18.0,
    friends_per_user: float = 8.0,
    cold_user_fraction: float = 0.05,
    cold_item_fraction: float = 0.05,
    seed: int = 0,
    latent_dim: int = 16,
    candidates: int | None = None,
) -> tuple[RecData, Latent]:
    """The network's data set and what drew it (`candidates`: draw each block of 1,024 members' views
    from that many random jobs instead of all of them, for catalogues of 10^5 jobs and more, where
    scoring every job is too slow).
    The steps share one Generator, so their order is part of the data set: do not reorder."""
    rng = np.random.default_rng(seed)
    world = _world(rng, n_universities, n_companies, latent_dim)
    u_uni, u_company, u_field, taste = _member_taste(rng, world, n_users)
    social = _friendships(rng, u_uni, u_company, friends_per_user)
    taste = _pull_towards_friends(taste, social)
    users = _member_profiles(rng, world, u_uni, u_company, u_field)
    items, j_vec, popularity = _jobs(rng, world, n_items)
    cold_users = rng.random(n_users) < cold_user_fraction
    cold_items = rng.random(n_items) < cold_item_fraction
    pu, pi, ps, pools = _views(rng, taste, j_vec, popularity, np.flatnonzero(~cold_users),
                               np.flatnonzero(~cold_items), mean_interactions, candidates)
    user_ids, item_ids = users["user_id"].to_numpy(), items["item_id"].to_numpy()
    interactions = _funnel(rng, pu, pi, ps, user_ids, item_ids)
    social_df = pd.DataFrame({"src": user_ids[social[:, 0]], "dst": user_ids[social[:, 1]]})
    meta = {"cold_users": int(cold_users.sum()), "cold_items": int(cold_items.sum()), "seed": seed}
    return (RecData("synthetic", users, items, interactions, social_df, meta),
            Latent(world, u_uni, u_company, taste, j_vec, popularity, cold_users, cold_items, pools))


def _world(rng: np.random.Generator, n_universities: int, n_companies: int, latent_dim: int) -> _World:
    """Name the universities and companies and draw the field, university and company vectors."""
    field_names = list(FIELDS)
    n_fields = len(field_names)
    universities = _unique_names(rng, n_universities, lambda: f"University of {rng.choice(CITIES)}")
    companies = _unique_names(
        rng, n_companies, lambda: f"{rng.choice(COMPANY_WORDS[0])}{rng.choice(COMPANY_WORDS[1]).lower()}"
    )
    field_vec = rng.normal(size=(n_fields, latent_dim))
    uni_vec = rng.normal(size=(n_universities, latent_dim))
    company_vec = rng.normal(size=(n_companies, latent_dim))
    # Each university and company leans towards a few fields: homophily in who studies/works where.
    uni_fields = rng.dirichlet(np.full(n_fields, 0.4), size=n_universities)
    company_fields = rng.dirichlet(np.full(n_fields, 0.3), size=n_companies)
    return _World(field_names, universities, companies, field_vec, uni_vec, company_vec, uni_fields, company_fields)


def _member_taste(rng: np.random.Generator, world: _World, n_users: int):
    """Each member's university, company, field and latent taste (before the pull of friends)."""
    n_universities, latent_dim = world.uni_vec.shape
    u_uni = rng.integers(n_universities, size=n_users)
    u_company = rng.integers(len(world.companies), size=n_users)
    field_p = 0.5 * world.uni_fields[u_uni] + 0.5 * world.company_fields[u_company]
    u_field = _sample_rows(rng, field_p)
    taste = (world.field_vec[u_field] + 0.6 * world.uni_vec[u_uni] + 0.5 * world.company_vec[u_company]
             + 0.5 * rng.normal(size=(n_users, latent_dim)))
    return u_uni, u_company, u_field, taste


def _pull_towards_friends(taste: np.ndarray, social: np.ndarray) -> np.ndarray:
    """Move each member's taste 30% towards their friends' mean (social homophily the graph can exploit)."""
    if len(social):
        deg = np.bincount(social.ravel(), minlength=len(taste)).astype(float)
        pulled = np.zeros_like(taste)
        np.add.at(pulled, social[:, 0], taste[social[:, 1]])
        np.add.at(pulled, social[:, 1], taste[social[:, 0]])
        has = deg > 0
        taste[has] = 0.7 * taste[has] + 0.3 * pulled[has] / deg[has, None]
    return taste


def _member_profiles(rng: np.random.Generator, world: _World, u_uni, u_company, u_field,
                     first: int = 0) -> pd.DataFrame:
    """The members table: user_id, university, company, a job title from their field and a headline."""
    field_names = world.field_names
    u_title = [FIELDS[field_names[f]][0][rng.integers(3)] for f in u_field]
    users = pd.DataFrame({
        "user_id": [f"u{k:06d}" for k in range(first, first + len(u_uni))],
        "university": [world.universities[k] for k in u_uni],
        "company": [world.companies[k] for k in u_company],
        "title": u_title,
    })
    users["headline"] = [
        f"{t} at {c} | {u} alumni | {', '.join(rng.choice(FIELDS[field_names[f]][1], 3, replace=False))}"
        for t, c, u, f in zip(users["title"], users["company"], users["university"], u_field)
    ]
    return users


def _jobs(rng: np.random.Generator, world: _World, n_items: int,
          first: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The jobs table (item_id, title, company, field, description), each job's vector and popularity."""
    field_names = world.field_names
    n_fields, latent_dim = world.field_vec.shape
    j_company = rng.integers(len(world.companies), size=n_items)
    j_field = _sample_rows(rng, 0.7 * world.company_fields[j_company] + 0.3 / n_fields)
    j_level = rng.integers(len(SENIORITY), size=n_items)
    j_vec = (world.field_vec[j_field] + 0.5 * world.company_vec[j_company]
             + 0.5 * rng.normal(size=(n_items, latent_dim)))
    popularity = rng.normal(0.0, 0.8, size=n_items)
    j_title = [
        (SENIORITY[lv] + " " + FIELDS[field_names[f]][0][rng.integers(3)]).strip()
        for f, lv in zip(j_field, j_level)
    ]
    items = pd.DataFrame({
        "item_id": [f"j{k:06d}" for k in range(first, first + n_items)],
        "title": j_title,
        "company": [world.companies[k] for k in j_company],
        "field": [field_names[f] for f in j_field],
    })
    items["description"] = [
        f"{c} is hiring a {t} in {fld}. You will work on {', '.join(rng.choice(FIELDS[fld][1], 4, replace=False))}."
        for c, t, fld in zip(items["company"], items["title"], items["field"])
    ]
    return items, j_vec, popularity


class Pools(NamedTuple):
    """With `candidates`, the jobs each block of BLOCK members draws its views from: kept, so that a
    later day's views come from the same jobs (and those posted since; recsys/data/next_day.py)."""
    block: np.ndarray       # per member: its block, -1 for a member without one (cold)
    jobs: list[np.ndarray]  # per block: its jobs


def _views(rng: np.random.Generator, taste, j_vec, popularity, warm_users, warm_items,
           mean_interactions: float, candidates: int | None, counts: np.ndarray | None = None):
    """Which warm member viewed which warm job: per member 5 + Poisson jobs by Gumbel-top-k over the appeal,
    in blocks of BLOCK members, each from `candidates` random jobs (all of them without).

    Returns parallel arrays of member index, job index and appeal, one entry per view, and the Pools
    drawn (None without `candidates`).
    """
    if counts is None:  # `counts`: each member's number of views, given (a later day's)
        counts = 5 + rng.poisson(max(mean_interactions - 5, 0.1), size=len(warm_users))
    counts = np.minimum(counts, len(warm_items))
    pooled = candidates is not None and candidates < len(warm_items)
    views, pools = [], []
    for start in range(0, len(warm_users), BLOCK):  # blocks bound memory at BLOCK x items
        pool = np.sort(rng.choice(warm_items, size=candidates, replace=False)) if pooled else warm_items
        pools.append(pool)
        views.append(block_views(rng, taste, j_vec, popularity, warm_users[start:start + BLOCK], pool,
                                 counts[start:start + BLOCK]))
    pu, pi, ps = (np.concatenate(v) for v in zip(*views))
    if not pooled:
        return pu, pi, ps, None
    block = np.full(len(taste), -1)
    block[warm_users] = np.arange(len(warm_users)) // BLOCK
    return pu, pi, ps, Pools(block, pools)


def block_views(rng: np.random.Generator, taste, j_vec, popularity, members: np.ndarray, pool: np.ndarray,
                counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`members`' views of jobs in `pool` (`counts` each, at most the pool) by Gumbel-top-k over the
    appeal: member index, job index and appeal per view."""
    appeal = 1.5 / np.sqrt(taste.shape[1]) * taste[members] @ j_vec[pool].T + popularity[pool]
    need = np.minimum(counts, len(pool))
    order = _gumbel_top_k(rng, appeal, need)
    picked = [order[row, :k] for row, k in enumerate(need)]
    return (np.repeat(members, need), np.concatenate([pool[p] for p in picked] or [np.zeros(0, int)]),
            np.concatenate([appeal[row, p] for row, p in enumerate(picked)] or [np.zeros(0)]))


def _gumbel_top_k(rng: np.random.Generator, appeal: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Per row, column indices ordered best-first by appeal + Gumbel noise, at least need.max() of them:
    the first k of a row are a sample of k without replacement from softmax(appeal)."""
    gumbel = appeal + rng.gumbel(size=appeal.shape)
    n_cols = appeal.shape[1]
    top = min(int(need.max()), n_cols)
    order = np.argpartition(-gumbel, top - 1, axis=1)[:, :top] if top < n_cols else \
        np.argsort(-gumbel, axis=1)
    return np.take_along_axis(order, np.argsort(-np.take_along_axis(gumbel, order, 1), axis=1), 1)


def _funnel(rng: np.random.Generator, pu, pi, ps, user_ids, item_ids, start: int = START,
            span: int = SPAN) -> pd.DataFrame:
    """Turn views into the event log: some views become clicks and some clicks applications, more often
    the better the match; timestamped within `span` seconds of `start` and sorted by (timestamp, user_id)."""
    match = 1 / (1 + np.exp(-(ps - np.median(ps))))
    clicked = rng.random(len(pu)) < 0.25 + 0.5 * match
    applied = clicked & (rng.random(len(pu)) < 0.1 + 0.4 * match)
    t_view = start + rng.integers(0, span, size=len(pu))
    t_click = t_view + rng.integers(5, 3600, size=len(pu))
    t_apply = t_click + rng.integers(600, 3 * 86400, size=len(pu))
    interactions = pd.DataFrame({
        "user_id": np.concatenate([pu, pu[clicked], pu[applied]]),
        "item_id": np.concatenate([pi, pi[clicked], pi[applied]]),
        "event": np.repeat(EVENTS, [len(pu), clicked.sum(), applied.sum()]),
        "timestamp": np.concatenate([t_view, t_click[clicked], t_apply[applied]]).astype(np.int64),
    })
    interactions["user_id"] = user_ids[interactions["user_id"]]
    interactions["item_id"] = item_ids[interactions["item_id"]]
    return interactions.sort_values(["timestamp", "user_id"], kind="stable").reset_index(drop=True)


def _unique_names(rng: np.random.Generator, n: int, make) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        name = make()
        if name in seen:
            name = f"{name} {len(names) + 1}"
        seen.add(name)
        names.append(name)
    return names


def _sample_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a row-stochastic matrix."""
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    return np.minimum((cdf < rng.random((len(probs), 1))).sum(axis=1), probs.shape[1] - 1)


def _friendships(rng, u_uni, u_company, friends_per_user: float) -> np.ndarray:
    """Undirected friendships, 40% within the university, 30% within the company, 30% anywhere."""
    n = len(u_uni)
    n_edges = int(n * friends_per_user / 2)
    if n_edges == 0 or n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    src = rng.integers(n, size=n_edges)
    kind = rng.random(n_edges)
    dst = rng.integers(n, size=n_edges)
    for group, use in ((u_uni, kind < 0.4), (u_company, (kind >= 0.4) & (kind < 0.7))):
        order = np.argsort(group, kind="stable")
        starts = np.searchsorted(group[order], group)
        sizes = np.bincount(group, minlength=group.max() + 1)[group]
        pick = starts[src[use]] + (rng.random(use.sum()) * sizes[src[use]]).astype(int)
        dst[use] = order[pick]
    keep = src != dst
    pairs = np.sort(np.stack([src[keep], dst[keep]], axis=1), axis=1)
    return np.unique(pairs, axis=0).astype(np.int64)
