"""The family registry (recsys/families.py) is the one place that knows the families: the
configuration, the CLI, data preparation and training read it, and nothing else branches on a
family's name."""
import re
from pathlib import Path

import numpy as np
import pytest

from recsys import families, fit
from recsys.config import ModelConfig, RunConfig, load_config
from recsys.config_base import ConfigError
from recsys.families import FAMILIES, Family, embedding_space
from recsys.prepare import prepare
from recsys.train import Callback

ROOT = Path(__file__).resolve().parents[1]


def test_no_code_outside_the_registry_branches_on_a_family_name():
    names = "|".join(FAMILIES)
    branching = re.compile(rf"""family\s*(==|!=|in\s*[\(\[\{{])\s*.*["']({names})["']""")
    found = []
    for folder in ("recsys", "flows", "deploy", "validation"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "families.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if branching.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_every_family_has_its_section_and_the_config_checks_names():
    sections = set(ModelConfig.model_fields) - {"family", "dim", "layers", "score"}
    assert sections == {f.name for f in FAMILIES.values() if f.options}
    with pytest.raises(ConfigError, match=r"'model.family': unknown model family; choose one of lightgcn, gcn"):
        load_config(None, ["model.family=transformer"])
    with pytest.raises(ConfigError, match=r"'search.family': no search space for this family"):
        load_config(None, ["search.family=llm"])
    assert families.searchable() == [f.name for f in FAMILIES.values() if f.space is not None]


def test_the_cli_lists_the_families(capsys):
    from flows.cli import main

    assert main(["families"]) == 0
    out = capsys.readouterr().out
    assert all(re.search(rf"^{name}\s", out, re.M) for name in FAMILIES)


class Counter(Callback):
    def __init__(self):
        self.epochs = 0

    def on_epoch_end(self, epoch, logs):
        self.epochs += 1


def test_a_family_added_to_the_registry_alone_is_configured_built_trained_and_searchable(small_network, monkeypatch):
    """A family is its model file plus one entry: here an entry that reuses MF's model file."""
    monkeypatch.setitem(FAMILIES, "toy", Family("toy", "a test family", "recsys.models.mf:MF", space=embedding_space))
    cfg = load_config(None, ["model.family=toy", "search.family=toy", "features.enabled=false", "model.dim=8",
                             "train.epochs=2", "train.progress=false", "train.eval_every=1"])
    prepared = prepare(small_network, cfg)
    seen = {}

    def callbacks(stage):
        seen[stage] = Counter()
        return [seen[stage]]

    trained = fit.train(prepared, cfg, callbacks)
    assert type(trained.model).__name__ == "MF" and seen[""].epochs == 2
    assert np.isfinite(trained.score) and trained.best_epoch in (1, 2)
    assert RunConfig.model_validate(cfg.model_dump()).model.family == "toy"
