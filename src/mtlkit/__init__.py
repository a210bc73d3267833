"""mtlkit: multi-task and multi-objective learning for ranking, in PyTorch.

The public API is flat: ``from mtlkit import Schema, Feature, Task, Table, read_table, load_dataset,
create_model, create_balancer, Trainer, TrainingOptions``.
"""

from mtlkit.balancing import create_balancer, list_balancers
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
    "infer_schema",
    "list_balancers",
    "list_datasets",
    "list_models",
    "load_dataset",
    "read_table",
]
