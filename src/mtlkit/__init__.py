"""mtlkit: multi-task and multi-objective learning for ranking, in PyTorch.

The public API is flat: ``from mtlkit import Schema, Feature, Task, Table, read_table, load_dataset,
create_model, create_balancer, Trainer, TrainingOptions, load_config, train_run, load_run,
predict_file, evaluate_file``.
"""

from mtlkit.balancing import create_balancer, list_balancers
from mtlkit.config import load_config
from mtlkit.data import (
    Batch,
    CategoricalEncoder,
    Encoders,
    NumericEncoder,
    Splits,
    Table,
    infer_schema,
    list_datasets,
    load_dataset,
    read_table,
)
from mtlkit.errors import DataError, MtlkitError, SchemaError
from mtlkit.models import create_model, list_models
from mtlkit.schema import Feature, Schema, Task
from mtlkit.training import Trainer, TrainingOptions
from mtlkit.training.file_metrics import evaluate_file
from mtlkit.training.predict import predict_file
from mtlkit.training.run import load_run, train_run

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "CategoricalEncoder",
    "DataError",
    "Encoders",
    "Feature",
    "MtlkitError",
    "NumericEncoder",
    "Schema",
    "SchemaError",
    "Splits",
    "Table",
    "Task",
    "Trainer",
    "TrainingOptions",
    "__version__",
    "create_balancer",
    "create_model",
    "evaluate_file",
    "infer_schema",
    "list_balancers",
    "list_datasets",
    "list_models",
    "load_config",
    "load_dataset",
    "load_run",
    "predict_file",
    "read_table",
    "train_run",
]
