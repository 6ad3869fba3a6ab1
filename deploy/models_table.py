"""The table `graphrec models` prints: every registered version with its aliases, family, promotion
decision, the metric gate's two figures, the other gates' verdicts, and what a person did to it
(forced, rolled back), what it replaced and which version its training started from. Read from the
registry here so that the command line only prints it."""
from __future__ import annotations

from mlflow.tracking import MlflowClient

from deploy.registry import gate_record
from deploy.tracking import configure


def models_table(stores, metric: str) -> list[str]:
    """The table's lines, header first; empty when the registered model has no version yet."""
    configure(stores)
    client = MlflowClient()
    name = stores.registered_model
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    lines = [f"{'version':>7}  {'aliases':<20} {'family':<8} {'decision':<9} {metric:>9} {'champion':>9} "
             f"{'embed':<5} {'canary':<6} note"]
    for v in sorted(versions, key=lambda v: int(v.version)):
        t = v.tags
        figures = metric_figures(t)
        lines.append(f"{v.version:>7}  {','.join(sorted(aliases.get(str(v.version), []))):<20} "
                     f"{t.get('graphrec.family', ''):<8} {t.get('promotion.decision', ''):<9} "
                     f"{figures.get('challenger', '')[:9]:>9} {figures.get('champion', '')[:9]:>9} "
                     f"{verdict(t, 'embedding'):<5} {verdict(t, 'canary'):<6} {'; '.join(_notes(t))}")
    return lines


def serving_split(stores) -> str | None:
    """A sentence when CURRENT does not serve the champion (deploy/handover.py), else None."""
    from deploy.handover import split
    from deploy.registry import CHAMPION, alias_version

    configure(stores)
    return split(stores.resolved_snapshots(), alias_version(stores.registered_model, CHAMPION))


def _notes(tags: dict) -> list[str]:
    """What happened to the version besides its gates: a forced promotion, a rollback, a predecessor."""
    note = []
    if tags.get("promotion.forced"):
        note.append(f"forced: {tags['promotion.forced']}")
    if tags.get("promotion.rolled_back_at"):
        note.append(f"rolled back {tags['promotion.rolled_back_at']}")
    if tags.get("promotion.previous_champion"):
        note.append(f"replaced v{tags['promotion.previous_champion']}")
    if tags.get("graphrec.warm_from"):
        note.append(f"warm from v{tags['graphrec.warm_from']}")
    return note


def metric_figures(tags: dict) -> dict[str, str]:
    """The metric gate's challenger and champion figures: from the decision's JSON record, or from
    the `gate.metric.*` tags that graphrec wrote before it kept the figures in JSON."""
    if "gate.metric.challenger" in tags:
        return {k: tags.get(f"gate.metric.{k}", "") for k in ("challenger", "champion")}
    record = gate_record(tags) or {}
    gate: dict = next((g for g in record.get("gates", []) if g.get("name") == "metric"), {})
    return {k: "" if gate.get("figures", {}).get(k) is None else str(gate["figures"][k])
            for k in ("challenger", "champion")}


def verdict(tags: dict, gate: str) -> str:
    """`pass` / `FAIL` from the gate's verdict tag (`gate.<gate>`, or the older `gate.<gate>.passed`)."""
    found = tags.get(f"gate.{gate}")
    if found is None and f"gate.{gate}.passed" in tags:
        found = "pass" if tags[f"gate.{gate}.passed"] == "true" else "FAIL"
    return (found or "").split(":")[0]
