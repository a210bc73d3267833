"""UCI Census-Income (KDD) with the task groups of the MMoE paper (Ma et al., KDD 2018, section 6.1).

* group 1: ``income`` (income > 50K) and ``marital`` (never married);
* group 2: ``education`` (at least college) and ``marital`` (never married).

"At least college" counts every level from ``Some college but no degree`` up (associates, bachelors, masters,
professional school, doctorate). The columns a group's tasks are derived from, and ``instance weight`` (a
sampling weight, per the UCI ``.names`` file), are never inputs; ``instance weight`` can be the sample weight.

Splits: with both UCI files, train is ``census-income.data`` (199,523 rows) and the test file is halved into
valid / test, as in the MMoE paper. With only the test file (as in ``../shared/data``) the split is fixed:
its 99,762 rows are permuted with ``numpy.random.default_rng(0)`` and cut 70 / 15 / 15 into train / valid / test.
Files are looked for in ``<data dir>/census-income/`` (gzip or not) and, when neither is there, downloaded from
the UCI archive.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from mtlkit.data.columns import Origin
from mtlkit.data.datasets import Splits
from mtlkit.data.datasets.common import make_splits
from mtlkit.data.download import download_file
from mtlkit.data.paths import data_dir as resolve_data_dir
from mtlkit.data.split import split_indices
from mtlkit.errors import DataError
from mtlkit.schema import Feature, Schema, Task

#: The 42 columns in file order (attributes 0-40 of census-income.names, then the income label).
COLUMNS = (
    "age class_worker det_ind_code det_occ_code education wage_per_hour hs_college marital_stat "
    "major_ind_code major_occ_code race hisp_origin sex union_member unemp_reason full_or_part_emp "
    "capital_gains capital_losses stock_dividends tax_filer_stat region_prev_res state_prev_res "
    "det_hh_fam_stat det_hh_summ instance_weight mig_chg_msa mig_chg_reg mig_move_reg mig_same "
    "mig_prev_sunbelt num_emp fam_under_18 country_father country_mother country_self citizenship "
    "own_or_self vet_question vet_benefits weeks_worked year income_50k"
).split()
#: Continuous attributes; every other attribute (coded ones such as industry codes included) is categorical.
NUMERIC = (
    "age",
    "wage_per_hour",
    "capital_gains",
    "capital_losses",
    "stock_dividends",
    "num_emp",
    "weeks_worked",
)
COLLEGE = (
    "Some college but no degree",
    "Associates degree-occup /vocational",
    "Associates degree-academic program",
    "Bachelors degree(BA AB BS)",
    "Masters degree(MA MS MEng MEd MSW MBA)",
    "Prof school degree (MD DDS DVM LLB JD)",
    "Doctorate degree(PhD EdD)",
)
GROUPS: dict[int, tuple[str, ...]] = {1: ("income", "marital"), 2: ("education", "marital")}
TASK_SOURCE = {"income": "income_50k", "marital": "marital_stat", "education": "education"}
#: task -> the derived 0/1 label column
LABEL_COLUMN = {"income": "income_gt_50k", "marital": "never_married", "education": "college"}
FILES = {"train": "census-income.data", "test": "census-income.test"}
EXPECTED_ROWS = {"train": 199_523, "test": 99_762}
UCI_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld/"
FIXED_SPLIT = (0.7, 0.15, 0.15)


def find_files(folder: Path) -> dict[str, Path]:
    """The UCI files present in ``folder`` (``.gz`` or plain), by part."""
    found = {}
    for part, name in FILES.items():
        for candidate in (folder / (name + ".gz"), folder / name):
            if candidate.is_file():
                found[part] = candidate
                break
    return found


def download(folder: Path, base_url: str = UCI_URL) -> dict[str, Path]:
    """Fetch both UCI files (gzip) into ``folder``."""
    for part, name in FILES.items():
        download_file(
            base_url.rstrip("/") + "/" + name + ".gz",
            folder / (name + ".gz"),
            expected_lines=EXPECTED_ROWS[part],
        )
    return find_files(folder)


def read_census(path: Path) -> pa.Table:
    """One UCI file as Arrow: the 42 named columns, text trimmed, numeric attributes as float64."""
    try:
        raw = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=list(COLUMNS), block_size=1 << 24),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in COLUMNS}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as exc:
        raise DataError(
            f"cannot read {path} as a Census-Income file ({exc}); it should have 42 comma-separated "
            f"columns and no header. Delete it to download a fresh copy."
        ) from None
    columns = {}
    for name in COLUMNS:
        text = pc.utf8_trim_whitespace(raw.column(name))
        if name in NUMERIC or name == "instance_weight":
            try:
                columns[name] = pc.cast(text, pa.float64())
            except pa.ArrowInvalid:
                raise DataError(
                    f"column {name!r} of {path} holds text where numbers belong; the file is not the "
                    f"UCI Census-Income file. Delete it to download a fresh copy."
                ) from None
        else:
            columns[name] = text
    return pa.table(columns)


def _derive_labels(table: pa.Table) -> pa.Table:
    derived = {
        LABEL_COLUMN["income"]: pc.equal(table.column("income_50k"), "50000+."),
        LABEL_COLUMN["marital"]: pc.equal(table.column("marital_stat"), "Never married"),
        LABEL_COLUMN["education"]: pc.is_in(table.column("education"), value_set=pa.array(COLLEGE)),
    }
    for name, flag in derived.items():
        table = table.append_column(name, pc.cast(flag, pa.float64()))
    return table


def census_schema(group: int = 1, embedding_dim: int = 4, use_instance_weight: bool = False) -> Schema:
    """The Schema of a task group: the group's tasks, every attribute but their sources as input."""
    if group not in GROUPS:
        raise DataError(f"census_income group must be 1 or 2 (the MMoE paper's task groups), got {group}")
    tasks = GROUPS[group]
    excluded = {TASK_SOURCE[t] for t in tasks} | {"instance_weight", "income_50k"}
    features = tuple(
        Feature(c, "numeric") if c in NUMERIC else Feature(c, "categorical", embedding_dim=embedding_dim)
        for c in COLUMNS
        if c not in excluded
    )
    return Schema(
        features,
        tuple(Task(t, "binary", label=LABEL_COLUMN[t]) for t in tasks),
        sample_weight="instance_weight" if use_instance_weight else None,
    )


def load_census_income(
    group: int = 1,
    data_dir: str | None = None,
    download_missing: bool = True,
    base_url: str = UCI_URL,
    embedding_dim: int = 4,
    use_instance_weight: bool = False,
) -> Splits:
    """Census-Income (KDD) Splits for MMoE task group 1 or 2 (see the module docstring for the split).

    Args:
        data_dir: root data folder (else ``MTLKIT_DATA_DIR``, else the user cache); files are read from
            its ``census-income/`` subfolder.
        download_missing: when neither UCI file is there, download both from ``base_url``.
        use_instance_weight: weight rows by the census ``instance weight`` column.
    """
    schema = census_schema(group, embedding_dim, use_instance_weight)
    folder = resolve_data_dir(data_dir) / "census-income"
    files = find_files(folder)
    if not files:
        if not download_missing:
            raise DataError(
                f"no Census-Income file in {folder} (census-income.test.gz / census-income.data.gz); "
                f"put them there, point --data-dir / MTLKIT_DATA_DIR elsewhere, or allow the download"
            )
        files = download(folder, base_url)
    if "test" not in files:
        raise DataError(
            f"{folder} has census-income.data but not census-income.test(.gz); add the test file "
            f"(it provides the validation and test rows)"
        )
    test = _derive_labels(read_census(files["test"]))
    origin_test = Origin(f"{files['test']} (permuted rows)")
    if "train" in files:
        train = _derive_labels(read_census(files["train"]))
        valid_idx, test_idx = split_indices(test.num_rows, (0.5, 0.5), seed=0)
        parts = {
            "train": (train, Origin(str(files["train"]), first_line=1)),
            "valid": (test.take(pa.array(valid_idx)), origin_test),
            "test": (test.take(pa.array(test_idx)), origin_test),
        }
        note = (
            f"Census-Income (KDD), MMoE task group {group}: train = census-income.data "
            f"({train.num_rows} rows); the test file halved into valid / test "
            f"(numpy.random.default_rng(0) permutation, {len(valid_idx)} / {len(test_idx)} rows)"
        )
    else:
        idx = split_indices(test.num_rows, FIXED_SPLIT, seed=0)
        parts = {
            part: (test.take(pa.array(rows)), origin_test)
            for part, rows in zip(("train", "valid", "test"), idx, strict=True)
        }
        sizes = " / ".join(str(len(i)) for i in idx)
        note = (
            f"Census-Income (KDD), MMoE task group {group}: only the UCI test file is present, so its "
            f"{test.num_rows} rows are permuted with numpy.random.default_rng(0) and split 70/15/15 into "
            f"train / valid / test ({sizes} rows); not comparable to numbers on the official split"
        )
    return make_splits("census_income", schema, parts, note)
