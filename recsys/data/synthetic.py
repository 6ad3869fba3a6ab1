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


def generate(
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
) -> RecData:
    """`candidates`: draw each block of 1,024 members' views from that many random jobs instead
    of all of them (for catalogues of 10^5 jobs and more, where scoring every job is too slow)."""
    rng = np.random.default_rng(seed)
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

    # --- members ---------------------------------------------------------------------------
    u_uni = rng.integers(n_universities, size=n_users)
    u_company = rng.integers(n_companies, size=n_users)
    field_p = 0.5 * uni_fields[u_uni] + 0.5 * company_fields[u_company]
    u_field = _sample_rows(rng, field_p)
    taste = (field_vec[u_field] + 0.6 * uni_vec[u_uni] + 0.5 * company_vec[u_company]
             + 0.5 * rng.normal(size=(n_users, latent_dim)))

    social = _friendships(rng, u_uni, u_company, friends_per_user)
    if len(social):
        # Friends pull each other's taste together (social homophily the graph can exploit).
        deg = np.bincount(social.ravel(), minlength=n_users).astype(float)
        pulled = np.zeros_like(taste)
        np.add.at(pulled, social[:, 0], taste[social[:, 1]])
        np.add.at(pulled, social[:, 1], taste[social[:, 0]])
        has = deg > 0
        taste[has] = 0.7 * taste[has] + 0.3 * pulled[has] / deg[has, None]

    u_title = [FIELDS[field_names[f]][0][rng.integers(3)] for f in u_field]
    users = pd.DataFrame({
        "user_id": [f"u{k:06d}" for k in range(n_users)],
        "university": [universities[k] for k in u_uni],
        "company": [companies[k] for k in u_company],
        "title": u_title,
    })
    users["headline"] = [
        f"{t} at {c} | {u} alumni | {', '.join(rng.choice(FIELDS[field_names[f]][1], 3, replace=False))}"
        for t, c, u, f in zip(users["title"], users["company"], users["university"], u_field)
    ]

    # --- jobs ------------------------------------------------------------------------------
    j_company = rng.integers(n_companies, size=n_items)
    j_field = _sample_rows(rng, 0.7 * company_fields[j_company] + 0.3 / n_fields)
    j_level = rng.integers(len(SENIORITY), size=n_items)
    j_vec = field_vec[j_field] + 0.5 * company_vec[j_company] + 0.5 * rng.normal(size=(n_items, latent_dim))
    popularity = rng.normal(0.0, 0.8, size=n_items)
    j_title = [
        (SENIORITY[lv] + " " + FIELDS[field_names[f]][0][rng.integers(3)]).strip()
        for f, lv in zip(j_field, j_level)
    ]
    items = pd.DataFrame({
        "item_id": [f"j{k:06d}" for k in range(n_items)],
        "title": j_title,
        "company": [companies[k] for k in j_company],
        "field": [field_names[f] for f in j_field],
    })
    items["description"] = [
        f"{c} is hiring a {t} in {fld}. You will work on {', '.join(rng.choice(FIELDS[fld][1], 4, replace=False))}."
        for c, t, fld in zip(items["company"], items["title"], items["field"])
    ]

    # --- interactions ----------------------------------------------------------------------
    cold_users = rng.random(n_users) < cold_user_fraction
    cold_items = rng.random(n_items) < cold_item_fraction
    warm_items = np.flatnonzero(~cold_items)
    warm_users = np.flatnonzero(~cold_users)
    counts = np.minimum(5 + rng.poisson(max(mean_interactions - 5, 0.1), size=len(warm_users)), len(warm_items))
    scale = 1.5 / np.sqrt(latent_dim)
    rows_u, rows_i, rows_s = [], [], []
    for start in range(0, len(warm_users), 1024):  # chunks bound memory at 1024 x items
        chunk = warm_users[start:start + 1024]
        pool = warm_items
        if candidates is not None and candidates < len(warm_items):
            pool = np.sort(rng.choice(warm_items, size=candidates, replace=False))
        appeal = scale * taste[chunk] @ j_vec[pool].T + popularity[pool]
        gumbel = appeal + rng.gumbel(size=appeal.shape)
        need = np.minimum(counts[start:start + 1024], len(pool))
        top = min(int(need.max()), len(pool))
        order = np.argpartition(-gumbel, top - 1, axis=1)[:, :top] if top < len(pool) else \
            np.argsort(-gumbel, axis=1)
        order = np.take_along_axis(order, np.argsort(-np.take_along_axis(gumbel, order, 1), axis=1), 1)
        for row, (user, k) in enumerate(zip(chunk, need)):
            picked = order[row, :k]
            rows_u.append(np.full(k, user))
            rows_i.append(pool[picked])
            rows_s.append(appeal[row, picked])
    pu, pi, ps = np.concatenate(rows_u), np.concatenate(rows_i), np.concatenate(rows_s)
    match = 1 / (1 + np.exp(-(ps - np.median(ps))))
    clicked = rng.random(len(pu)) < 0.25 + 0.5 * match
    applied = clicked & (rng.random(len(pu)) < 0.1 + 0.4 * match)
    t_view = START + rng.integers(0, SPAN, size=len(pu))
    t_click = t_view + rng.integers(5, 3600, size=len(pu))
    t_apply = t_click + rng.integers(600, 3 * 86400, size=len(pu))
    interactions = pd.DataFrame({
        "user_id": np.concatenate([pu, pu[clicked], pu[applied]]),
        "item_id": np.concatenate([pi, pi[clicked], pi[applied]]),
        "event": np.repeat(EVENTS, [len(pu), clicked.sum(), applied.sum()]),
        "timestamp": np.concatenate([t_view, t_click[clicked], t_apply[applied]]).astype(np.int64),
    })
    interactions["user_id"] = users["user_id"].to_numpy()[interactions["user_id"]]
    interactions["item_id"] = items["item_id"].to_numpy()[interactions["item_id"]]
    interactions = interactions.sort_values(["timestamp", "user_id"], kind="stable").reset_index(drop=True)

    social_df = pd.DataFrame({
        "src": users["user_id"].to_numpy()[social[:, 0]],
        "dst": users["user_id"].to_numpy()[social[:, 1]],
    })
    meta = {"cold_users": int(cold_users.sum()), "cold_items": int(cold_items.sum()), "seed": seed}
    return RecData("synthetic", users, items, interactions, social_df, meta)


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
