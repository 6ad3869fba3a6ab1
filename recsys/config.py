"""The one configuration of a graphrec run: a pydantic model loaded from YAML, overridable by
`key=value` strings. Defaults give the embedded setup (synthetic data, everything under
`.graphrec/`). Unknown keys and bad values are refused with the key's name and what is allowed.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator

from recsys import families
from recsys.config_base import ConfigError, Section
from recsys.config_file import describe, override_value, read_yaml
from recsys.config_ops import ComputeConfig, PromotionConfig, RefreshConfig, ScheduleConfig, SearchConfig, StoresConfig
from recsys.config_train import AUTO, NegativesConfig, WarmConfig, recipe_value
from recsys.data.settings import DataConfig, SplitConfig, SyntheticConfig  # noqa: F401  (sections of RunConfig)


class ValidationConfig(Section):
    min_interactions_per_user: int = Field(3, ge=1)
    timestamp_min: Optional[int] = Field(0, description="unix seconds; None to skip")
    timestamp_max: Optional[int] = Field(4102444800, description="unix seconds (2100-01-01)")
    max_feature_null_fraction: float = Field(0.5, ge=0, le=1, description="per feature column")
    report_examples: int = Field(5, ge=1)
    test_only_ids: Literal["warn", "fail"] = Field(
        "warn", description="ids that occur only in a source's own held-out rows (e.g. only in test.txt): "
                            "warn reports them and keeps them as users/items; fail refuses the data")


class ColdStartConfig(Section):
    enabled: bool = False
    k: int = Field(10, ge=1, description="at most k heuristic edges per cold node")
    user_attributes: Optional[list[str]] = Field(
        None, description="user columns to match on; default: the users table's categorical columns")
    candidates: Optional[int] = Field(
        None, ge=1, description="cold users: warm users considered per combination of attribute values, most active "
                                "first; default k (exact for up to max_combination attributes)")
    max_combination: int = Field(
        3, ge=1, description="cold users: attribute combinations of up to this many columns are matched; with more "
                             "columns the edges are approximate (see recsys/graph/cold_start.py)")
    exact_below: int = Field(
        4096, ge=0, description="cold items: exact cosine search when at most this many items are cold (or warm), "
                                "a faiss HNSW index over the warm items above")


class GraphConfig(Section):
    social_edges: bool = False
    cold_start: ColdStartConfig = Field(default_factory=ColdStartConfig)


class FeaturesConfig(Section):
    enabled: bool = True
    text: bool = Field(True, description="encode text columns with all-MiniLM-L6-v2")
    max_categories: int = Field(64, ge=1)


class _ModelSection(Section):
    family: str = Field("lightgcn", description="a model family (see `graphrec families`)")
    dim: int = Field(64, ge=1)
    layers: int = Field(3, ge=0, description="propagation or convolution layers, for the families that have them "
                                             "(see `graphrec families`; sage takes len(sage.fanouts))")
    score: Literal["dot", "cosine"] = Field("dot", description="cosine: embeddings scaled to unit length")

    if TYPE_CHECKING:  # model.<family>: that family's options section, added from the registry below
        def __getattr__(self, name: str) -> Any: ...

    @field_validator("family")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in families.FAMILIES:
            raise ValueError(f"unknown model family; choose one of {', '.join(families.FAMILIES)}")
        return name


# The model section: the shared keys above and each family's own options, model.<family>.
if TYPE_CHECKING:
    ModelConfig = _ModelSection
else:
    ModelConfig = create_model("ModelConfig", __base__=_ModelSection, **{
        f.name: (f.options, Field(default_factory=f.options)) for f in families.FAMILIES.values() if f.options})



GENERIC = {"epochs": 40, "lr": 0.005, "l2": 1e-4, "average": None, "negatives.kind": "uniform",
           "negatives.per_positive": 1, "warm.shrink": 0.3, "warm.perturb": 0.1,
           "warm.lr": 1.0, "warm.lr_epochs": 0, "warm.patience": None,
           "warm.eval_every": 1}  # a family without a recipe


class TrainConfig(Section):
    """Training settings. Those left `auto` are made concrete by recsys/recipe.py: the family's recipe
    (its registry entry), else GENERIC; the step bound and the candidate rule likewise."""
    epochs: Union[Literal["auto"], int] = Field(AUTO, description="at most (early stopping may end it sooner); "
                                                                  "auto: the family's recipe (see `graphrec "
                                                                  "families`), else 40")
    batch_size: int = Field(2048, ge=1)
    max_steps_per_epoch: Union[Literal["auto"], int, None] = Field(
        "auto", description="at most this many optimiser steps per epoch: a log of more than batch_size x this "
                            "pairs trains in batches of ceil(pairs / this), so an epoch's whole-graph products "
                            "stay this many and its cost grows linearly with the log; null: batch_size always "
                            "(the exact per-batch mode); auto: the family's own bound (see `graphrec families`)")
    lr: Union[Literal["auto"], float] = Field(AUTO, description="auto: the family's recipe (see `graphrec "
                                                                 "families`), else 0.005")
    lr_batch_scaling: Literal["none", "sqrt", "linear"] = Field(
        "sqrt", description="batches grown past batch_size (max_steps_per_epoch) train with lr x (batch / batch_size) "
                            "to the power 0, 1/2 or 1")
    lr_milestones: list[int] = Field(default_factory=list, description="epochs after which lr is multiplied "
                                                                      "by lr_gamma")
    lr_gamma: float = Field(0.1, gt=0, le=1)
    lr_schedule: Literal["milestones", "cosine"] = Field(
        "milestones", description="milestones: lr x lr_gamma after each of lr_milestones (none: constant); "
                                  "cosine: lr falls along a half cosine to 0 over `epochs`")
    l2: Union[Literal["auto"], float] = Field(AUTO, description="auto: the family's recipe (see `graphrec "
                                                                 "families`), else 1e-4")
    l2_form: Literal["occurrence", "row"] = Field(
        "occurrence", description="occurrence: the L2 of the batch's rows, so a row pays it once per occurrence "
                                  "(LightGCN's form); row: every ID row pays it once a step, whatever its degree "
                                  "(recsys.models.base.row_l2; families with ID tables)")
    average: Union[Literal["auto"], float, None] = Field(
        AUTO, description="decay of an exponential moving average of the parameters, updated every step; "
                          "validation, early stopping and the trained model use the average (null: the "
                          "parameters as trained; auto: the family's recipe (see `graphrec families`), else "
                          "null)")
    eval_every: int = Field(2, ge=1)
    refit: bool = Field(
        True, description="after early stopping has chosen the budget on the validation split, train a fresh "
                          "model on training and validation pairs together for the same number of optimiser "
                          "steps, and serve that one; the promotion gate still judges the model chosen on "
                          "validation (its vectors are kept with the version). Families trained by the ranking "
                          "loop alone (see `graphrec families`); a search's trials never refit")
    patience: int = Field(5, ge=1, description="evaluations without improvement before stopping")
    monitor: str = "ndcg@20"
    seed: int = 0
    progress: bool = True
    checkpoint_seconds: Optional[float] = Field(
        120.0, ge=0, description="the retrain keeps the loop's state on disk after an epoch, at most this often, "
                                 "so a run interrupted part-way goes on from there when started again on the same "
                                 "data and settings; null: never")
    loss: Literal["bpr", "softmax"] = Field("bpr", description="bpr (or the family's pairwise loss) or sampled "
                                                               "softmax")
    temperature: float = Field(0.1, gt=0, description="softmax: logits are scores / temperature")
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)
    start: Literal["auto", "scratch", "champion"] = Field(
        "auto", description="where training starts: champion: the champion's weights, its ID rows matched by id "
                            "(recsys/warm.py); scratch: the usual initialisation; auto: the champion when one of the "
                            "same family and shape exists, scratch_every allows it and the data did not drift "
                            "beyond the check's bounds, else scratch (the reason is logged)")
    scratch_every: int = Field(7, ge=0, description="auto: every this many retrains in a row, one from scratch, "
                                                    "so errors do not compound (0: never)")
    warm: WarmConfig = Field(default_factory=WarmConfig)

    @field_validator("epochs", "lr", "l2", "average")
    @classmethod
    def _recipe_value(cls, value, info):
        allowed, what = {"epochs": (lambda v: v >= 1, "a positive integer"),
                         "lr": (lambda v: v > 0, "a number above 0"),
                         "l2": (lambda v: v >= 0, "a number of 0 or more"),
                         "average": (lambda v: 0 < v < 1, "a number between 0 and 1"),
                         }[info.field_name]
        return recipe_value(value, allowed, what)

    def resolved(self, recipe: dict) -> "TrainConfig":
        """A copy with every `auto` setting taken from `recipe` (a family's recipe, dotted
        keys), else from GENERIC."""
        tree = self.model_dump()
        auto = [key for key in GENERIC if _get_dotted(tree, key) == AUTO]
        if not auto:
            return self
        for key in auto:
            _set_dotted(tree, key, recipe.get(key, GENERIC[key]))
        return TrainConfig.model_validate(tree)

    def recipe(self) -> dict:
        """The resolved settings GENERIC names, as dotted keys (for the run's record)."""
        tree = self.model_dump()
        return {key: _get_dotted(tree, key) for key in GENERIC}

    @field_validator("max_steps_per_epoch")
    @classmethod
    def _steps(cls, steps):
        if isinstance(steps, int) and steps < 1:
            raise ValueError("max_steps_per_epoch must be a positive integer, auto or null")
        return steps


class EvalConfig(Section):
    ks: list[int] = Field(default_factory=lambda: [10, 20])
    chunk_size: int = Field(1024, ge=1, description="users scored at once; bounds peak memory")
    max_users: Optional[int] = Field(
        10_000, ge=1, description="users ranked per evaluation: where more users have targets, a sample of this "
                                  "many drawn with `seed` (the same users for every model on the same data, so "
                                  "champion and challenger meet on one sample); every item is ranked either way. "
                                  "null ranks every user")
    seed: int = Field(0, description="seed of the user sample")

    @field_validator("ks")
    @classmethod
    def _positive(cls, ks: list[int]) -> list[int]:
        if not ks or min(ks) < 1:
            raise ValueError("ks must be a non-empty list of positive integers")
        return sorted(set(ks))

    def ranking(self) -> dict[str, Any]:
        """The keyword arguments of recsys.metrics.evaluate these settings give."""
        return {"ks": self.ks, "chunk_size": self.chunk_size, "max_users": self.max_users, "sample_seed": self.seed}


class RunConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    graph: GraphConfig = Field(default_factory=GraphConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    refresh: RefreshConfig = Field(default_factory=RefreshConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    stores: StoresConfig = Field(default_factory=StoresConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)

    def flat(self) -> dict[str, Any]:
        """Dotted keys to plain values, e.g. {'model.dim': 64} (for logging as params)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = str(value) if isinstance(value, Path) else value

        walk("", self.model_dump(mode="json"))
        return out


def _get_dotted(tree: dict, key: str) -> Any:
    for part in key.split("."):
        tree = tree[part]
    return tree


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{key}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _is_field(loc: tuple) -> bool:
    """Whether `loc` (a path of names from RunConfig down) names a field of a section."""
    model: Any = RunConfig
    for part in loc:
        if not isinstance(model, type) or not issubclass(model, BaseModel) or part not in model.model_fields:
            return False
        model = model.model_fields[part].annotation
    return True


def _allowed_keys(loc: tuple) -> Optional[list[str]]:
    section = _section_at(loc)
    return list(section.model_fields) if section else None


def _describe(errors: list) -> list[str]:
    return describe(errors, _is_field, _allowed_keys)


def _section_at(loc: tuple) -> Optional[type[BaseModel]]:
    model: Any = RunConfig
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return None
        model = field.annotation
    return model


def load_config(path: Optional[str | Path] = None, overrides: list[str] | None = None) -> RunConfig:
    """Read YAML (if given), apply `key=value` overrides (values parsed as YAML), validate."""
    tree: dict = read_yaml(Path(path)) if path is not None else {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value, e.g. train.epochs=10")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), override_value(raw))
    source = f" ({path})" if path is not None else ""
    try:
        cfg = RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise _invalid(_describe(exc.errors()), source) from None
    problems = cross_key_problems(cfg)
    if problems:
        raise _invalid(problems, source)
    return cfg


RANKING_METRICS = ("recall", "ndcg", "precision", "hit")


def computed_metrics(ks: list[int]) -> list[str]:
    """The names the evaluation computes for these K's (recsys.metrics.evaluate_scores)."""
    return [f"{m}@{k}" for k in sorted(ks) for m in RANKING_METRICS]


def cross_key_problems(cfg: RunConfig) -> list[str]:
    """Keys whose allowed values depend on other keys: the metric that training monitors and the
    one the promotion gate compares must be among those the evaluation computes (eval.ks)."""
    names = computed_metrics(cfg.eval.ks)
    problems = []
    for key, value in (("train.monitor", cfg.train.monitor), ("promotion.metric", cfg.promotion.metric)):
        if value in names:
            continue
        metric, _, k = value.partition("@")
        hint = (f" (or add {k} to eval.ks={cfg.eval.ks})" if metric in RANKING_METRICS and k.isdigit() and int(k) > 0
                else f" (a metric is one of {', '.join(RANKING_METRICS)}, '@', a K from eval.ks)")
        problems.append(f"{key}={value!r} is not computed; choose one of {names}{hint}")
    return problems


def _invalid(lines: list[str], source: str = "") -> ConfigError:
    """One line per problem, the first on the first line."""
    return ConfigError(f"invalid configuration{source}: " + "\n  ".join(lines))


def with_overrides(cfg: RunConfig, values: dict[str, Any]) -> RunConfig:
    """A copy of cfg with dotted keys set (e.g. from a search trial), validated again."""
    tree = cfg.model_dump()
    for key, value in values.items():
        _set_dotted(tree, key, value)
    try:
        out = RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise _invalid(_describe(exc.errors())) from None
    problems = cross_key_problems(out)
    if problems:
        raise _invalid(problems)
    return out
