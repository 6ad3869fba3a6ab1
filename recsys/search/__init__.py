"""Hyperparameter search over a model family, as library code: the space's trials in their order
(space.py: the recipe, settings proven elsewhere, the recipe's neighbours), the pruning rules and
training callbacks (rules.py), the study itself and how trials run on it (study.py), and which
trial a search keeps (choice.py). The flow (flows/search.py) wires them to Prefect and MLflow."""
