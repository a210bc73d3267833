"""mtlkit: multi-task and multi-objective learning for ranking, in PyTorch.

The public API is flat: ``from mtlkit import Schema, Feature, Task, Table, read_table, load_dataset``.
"""

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
from mtlkit.schema import Feature, Schema, Task

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
    "__version__",
    "infer_schema",
    "list_datasets",
    "load_dataset",
    "read_table",
]
