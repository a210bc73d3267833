"""The data layer: column-tensor Tables, encoders, file readers and data sets."""

from mtlkit.data.datasets import Splits, list_datasets, load_dataset
from mtlkit.data.encoders import CategoricalEncoder, Encoders, NumericEncoder
from mtlkit.data.readers import infer_schema, read_arrow, read_table, schema_yaml
from mtlkit.data.table import Batch, Table

__all__ = [
    "Batch",
    "CategoricalEncoder",
    "Encoders",
    "NumericEncoder",
    "Splits",
    "Table",
    "infer_schema",
    "list_datasets",
    "load_dataset",
    "read_arrow",
    "read_table",
    "schema_yaml",
]
