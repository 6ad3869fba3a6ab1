"""The registered model's code file (MLflow "models from code"): MLflow runs this file to build the
model when it loads a version, instead of unpickling a stored object. It imports only what the
version carries in its `code/` folder (`deploy.pyfunc` and the parts of `recsys` it needs)."""
import mlflow

from deploy.pyfunc import RecommenderModel

mlflow.models.set_model(RecommenderModel())
