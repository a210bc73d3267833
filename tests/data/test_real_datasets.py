"""Loaders of the real data sets, checked against facts of the files in the shared data folder."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from mtlkit import DataError, list_datasets, load_dataset
from mtlkit.data.datasets.census_income import COLUMNS


def test_registry_lists_every_dataset() -> None:
    assert list_datasets() == ["synthetic", "census_income", "aliexpress", "ali_ccp", "funnel"]


def test_unknown_dataset_suggests_the_closest_name() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'census_incme' \(did you mean 'census_income'\?\)"):
        load_dataset("census_incme")


def test_unknown_parameter_lists_the_accepted_ones() -> None:
    with pytest.raises(DataError, match=r"no parameter 'grup' \(did you mean 'group'\?\).*'data_dir'"):
        load_dataset("census_income", grup=2)


# ------------------------------------------------------------------------------------------------- census
@pytest.fixture(scope="module")
def census(data_dir: Path):  # type: ignore[no-untyped-def]
    return load_dataset("census_income", data_dir=str(data_dir))


def test_census_counts_match_the_uci_test_file(census) -> None:  # type: ignore[no-untyped-def]
    parts = list(census.parts().values())
    assert sum(len(t) for t in parts) == 99_762
    assert sum(int(np.nansum(t.label("income").numpy())) for t in parts) == 6_186
    assert sum(int(np.nansum(t.label("marital").numpy())) for t in parts) == 43_143


def test_census_fixed_split_is_the_seed_zero_permutation(census, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    n = 99_762
    order = np.random.default_rng(0).permutation(n)
    n_train, n_valid = int(np.floor(0.7 * n)), int(np.floor(0.15 * n))
    assert [len(t) for t in census.parts().values()] == [n_train, n_valid, n - n_train - n_valid]
    with gzip.open(data_dir / "census-income" / "census-income.test.gz", "rt") as handle:
        ages = np.array([float(line.split(",", 1)[0]) for line in handle])  # column 0 is age
    train_rows = np.sort(order[:n_train])
    # ages are standardised with the train mean/std; undo it and compare with the raw file's rows
    enc = census.train.encoders.numeric["age"]
    column = census.schema.numeric_columns.index(("age", "age"))
    restored = census.train.numeric[:, column].double().numpy() * enc.std + enc.mean
    np.testing.assert_allclose(restored, ages[train_rows], atol=1e-3)
    assert "numpy.random.default_rng(0)" in census.note
    assert "70/15/15" in census.note


def test_census_task_columns_and_instance_weight_are_never_inputs(census) -> None:  # type: ignore[no-untyped-def]
    sources = {f.source for f in census.schema.features}
    assert {"income_50k", "marital_stat", "instance_weight"}.isdisjoint(sources)
    assert len(census.schema.features) == len(COLUMNS) - 3
    assert census.schema.task_names == ("income", "marital")


def test_census_group_two_predicts_education_and_keeps_income_out(data_dir: Path) -> None:
    splits = load_dataset("census_income", group=2, data_dir=str(data_dir))
    assert splits.schema.task_names == ("education", "marital")
    sources = {f.source for f in splits.schema.features}
    assert {"education", "marital_stat", "income_50k", "instance_weight"}.isdisjoint(sources)
    rate = float(np.nanmean(splits.train.label("education").numpy()))
    assert 0.25 < rate < 0.45  # some college or more: about a third of the population (children included)


def test_census_instance_weight_as_sample_weight(data_dir: Path) -> None:
    splits = load_dataset("census_income", use_instance_weight=True, data_dir=str(data_dir))
    assert splits.train.weights is not None
    assert float(splits.train.weights.min()) > 0


def test_census_missing_folder_without_download_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no Census-Income file in .*census-income"):
        load_dataset("census_income", data_dir=str(tmp_path), download_missing=False)


def test_census_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "census-income"
    folder.mkdir()
    with gzip.open(folder / "census-income.test.gz", "wt") as handle:
        handle.write("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match=r"census-income\.test\.gz"):
        load_dataset("census_income", data_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------- AliExpress, CCP
def test_aliexpress_sample(data_dir: Path) -> None:
    splits = load_dataset("aliexpress", data_dir=str(data_dir))
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (90, 10, 20)
    assert splits.schema.task_names == ("click", "conversion")
    assert len(splits.schema.categorical) == 16
    assert len(splits.schema.numeric) == 63
    assert splits.schema.group == "search_id"
    assert splits.train.groups is not None
    assert not np.isnan(splits.train.labels.numpy()).any()


def test_aliexpress_clicked_only_masks_conversion_where_not_clicked(data_dir: Path) -> None:
    full = load_dataset("aliexpress", data_dir=str(data_dir))
    masked = load_dataset("aliexpress", data_dir=str(data_dir), conversion="clicked_only")
    for part in ("train", "valid", "test"):
        click = full.parts()[part].label("click").numpy()
        conv = masked.parts()[part].label("conversion").numpy()
        np.testing.assert_array_equal(np.isnan(conv), click == 0)
        np.testing.assert_array_equal(
            conv[click == 1], full.parts()[part].label("conversion").numpy()[click == 1]
        )


def test_ali_ccp_sample(data_dir: Path) -> None:
    splits = load_dataset("ali_ccp", data_dir=str(data_dir))
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (100, 50, 50)
    assert splits.schema.task_names == ("click", "purchase")
    numeric = {f.name for f in splits.schema.numeric}
    assert numeric == {"D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853"}
    assert len(splits.schema.categorical) == 23
    click = splits.train.label("click").numpy()
    purchase = splits.train.label("purchase").numpy()
    assert np.all(purchase <= click)  # entire space: a purchase implies a click
    masked = load_dataset("ali_ccp", data_dir=str(data_dir), purchase="clicked_only")
    assert int(np.isnan(masked.train.label("purchase").numpy()).sum()) == int((click == 0).sum())


def test_ali_ccp_user_id_as_group_is_no_longer_an_input(data_dir: Path) -> None:
    plain = load_dataset("ali_ccp", data_dir=str(data_dir))
    assert plain.schema.group is None
    assert plain.train.groups is None
    grouped = load_dataset("ali_ccp", data_dir=str(data_dir), group="101")
    assert grouped.schema.group == "101"
    assert "101" not in grouped.schema.feature_names
    assert len(grouped.schema.categorical) == len(plain.schema.categorical) - 1
    for part in (grouped.train, grouped.valid, grouped.test):
        assert part.groups is not None
        assert part.groups.shape == (len(part),)
    assert "group '101'" in grouped.note


def test_ali_ccp_unknown_group_field_is_a_clear_error(data_dir: Path) -> None:
    with pytest.raises(DataError, match=r"group '1010' is not a field .*did you mean '101'"):
        load_dataset("ali_ccp", data_dir=str(data_dir), group="1010")
    with pytest.raises(DataError, match=r"group 'click' is not a field"):
        load_dataset("ali_ccp", data_dir=str(data_dir), group="click")


def test_folder_loader_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"aliexpress: .* is not a folder"):
        load_dataset("aliexpress", path=str(tmp_path / "nope"))
    (tmp_path / "train.csv").write_text("click,conversion\n1,0\n")
    with pytest.raises(DataError, match=r"has no test file"):
        load_dataset("aliexpress", path=str(tmp_path))
