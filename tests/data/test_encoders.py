"""CategoricalEncoder, NumericEncoder and Encoders: fitted statistics, unknown values, serialisation."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import StandardScaler

from mtlkit.data.columns import Origin
from mtlkit.data.encoders import CategoricalEncoder, Encoders, NumericEncoder
from mtlkit.errors import DataError
from mtlkit.schema import Feature, Schema, Task


def _reference_vocab(values: Sequence[object], min_count: int = 1) -> list[str]:
    """The documented rule, written independently: most frequent first, ties by string value."""
    counts = Counter(str(v) for v in values if v is not None)
    kept = [(v, c) for v, c in counts.items() if c >= min_count]
    return [v for v, _ in sorted(kept, key=lambda vc: (-vc[1], vc[0]))]


def _reference_codes(vocab: Sequence[str], values: Sequence[object]) -> list[int]:
    position = {v: i + 1 for i, v in enumerate(vocab)}
    return [0 if v is None else position.get(str(v), 0) for v in values]


# ---------------------------------------------------------------------- CategoricalEncoder
def test_vocabulary_by_frequency_then_value() -> None:
    values = ["b", "a", "c", "a", "b", "d", "a", "e", "e"]
    enc = CategoricalEncoder.fit(pa.array(values))
    # a x3; b, e x2 (tie: b before e); c, d x1 (tie: c before d)
    assert enc.vocabulary == ("a", "b", "e", "c", "d")
    assert enc.size == 6
    codes = enc.transform(pa.array(["a", "b", "e", "c", "d"]))
    assert codes.tolist() == [1, 2, 3, 4, 5]
    assert codes.dtype == np.int64


def test_min_count_drops_rare_values_to_zero() -> None:
    values = ["x", "x", "x", "y", "y", "z"]
    enc = CategoricalEncoder.fit(pa.array(values), min_count=2)
    assert enc.vocabulary == ("x", "y")
    assert enc.transform(pa.array(["z", "y", "x"])).tolist() == [0, 2, 1]
    assert CategoricalEncoder.fit(pa.array(values), min_count=4).vocabulary == ()


def test_nulls_are_not_counted_and_encode_to_zero() -> None:
    enc = CategoricalEncoder.fit(pa.array(["a", None, None, None, "b", "a"]))
    assert enc.vocabulary == ("a", "b")
    assert enc.transform(pa.array([None, "a", None], pa.string())).tolist() == [0, 1, 0]


def test_unseen_values_encode_to_zero() -> None:
    enc = CategoricalEncoder.fit(pa.array(["a", "b"]))
    assert enc.transform(pa.array(["never", "seen", "b", ""])).tolist() == [0, 0, 2, 0]
    # an unseen type (ints for a text vocabulary) does not crash either
    assert enc.transform(pa.array([7, None], pa.int64())).tolist() == [0, 0]
    assert enc.transform(pa.nulls(3)).tolist() == [0, 0, 0]


def test_nan_is_missing_not_a_category() -> None:
    enc = CategoricalEncoder.fit(pa.array([1.0, np.nan, 1.0, np.nan, np.nan, 2.0]))
    assert enc.vocabulary == ("1", "2")
    assert enc.transform(pa.array([np.nan, 2.0, 1.0])).tolist() == [0, 2, 1]
    non_integral = CategoricalEncoder.fit(pa.array([1.5, np.nan, np.nan]))
    assert non_integral.vocabulary == ("1.5",)


def test_ints_floats_and_strings_share_codes() -> None:
    enc = CategoricalEncoder.fit(pa.array([3, 1, 1, 2, 2, 2], pa.int64()))
    assert enc.vocabulary == ("2", "1", "3")
    expected = [2, 1, 3, 0]
    assert enc.transform(pa.array([1, 2, 3, 4], pa.int32())).tolist() == expected
    assert enc.transform(pa.array([1.0, 2.0, 3.0, 4.0])).tolist() == expected
    assert enc.transform(pa.array([1.0, 2.0, 3.0, 4.5], pa.float32())).tolist() == expected
    assert enc.transform(pa.array(["1", "2", "3", "4"])).tolist() == expected
    assert enc.transform(pa.array(["1", "2", "3", "4"], pa.large_string())).tolist() == expected
    # fitted on floats, applied to ints and strings
    from_floats = CategoricalEncoder.fit(pa.array([3.0, 1.0, 1.0, 2.0, 2.0, 2.0, None]))
    assert from_floats == enc
    assert from_floats.transform(pa.array(["1", "2", "3", "4"])).tolist() == expected


def test_chunked_and_dictionary_input() -> None:
    chunked = pa.chunked_array([["a", "b"], ["b", None]])
    enc = CategoricalEncoder.fit(chunked)
    assert enc.vocabulary == ("b", "a")
    dictionary = pa.array(["a", "b", "c"]).dictionary_encode()
    assert enc.transform(dictionary).tolist() == [2, 1, 0]
    assert enc.transform(chunked).tolist() == [2, 1, 1, 0]


def test_empty_vocabulary() -> None:
    enc = CategoricalEncoder.fit(pa.array([None, None], pa.string()))
    assert enc.vocabulary == ()
    assert enc.size == 1
    assert enc.transform(pa.array(["a", None])).tolist() == [0, 0]


def test_repeated_vocabulary_rejected() -> None:
    with pytest.raises(DataError, match="repeat"):
        CategoricalEncoder(["a", "b", "a"])


def test_categorical_round_trip_gives_identical_codes() -> None:
    rng = np.random.default_rng(0)
    train = pa.array([f"v{i}" for i in rng.integers(0, 30, size=300)])
    enc = CategoricalEncoder.fit(train, min_count=3)
    back = CategoricalEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert back == enc
    assert back.vocabulary == enc.vocabulary
    new = pa.array([f"v{i}" for i in rng.integers(0, 40, size=200)] + [None])
    np.testing.assert_array_equal(back.transform(new), enc.transform(new))
    assert repr(enc) == f"CategoricalEncoder(size={enc.size})"


_category = st.one_of(
    st.none(),
    st.integers(min_value=-5, max_value=5),
    st.sampled_from(["a", "b", "c", "é", " ", "1"]),
)


@settings(max_examples=60, deadline=None)
@given(
    train=st.lists(_category, max_size=40),
    new=st.lists(_category, max_size=40),
    min_count=st.integers(min_value=1, max_value=4),
)
def test_codes_match_reference_and_stay_in_range(
    train: list[object], new: list[object], min_count: int
) -> None:
    as_text = [None if v is None else str(v) for v in train]
    enc = CategoricalEncoder.fit(pa.array(as_text, pa.string()), min_count=min_count)
    assert list(enc.vocabulary) == _reference_vocab(as_text, min_count)
    new_text = [None if v is None else str(v) for v in new]
    codes = enc.transform(pa.array(new_text, pa.string()))
    assert codes.shape == (len(new),)
    assert ((codes >= 0) & (codes < enc.size)).all()
    assert codes.tolist() == _reference_codes(enc.vocabulary, new_text)
    ints = [v for v in new if isinstance(v, int)]
    np.testing.assert_array_equal(
        enc.transform(pa.array(ints, pa.int64())),
        enc.transform(pa.array([float(v) for v in ints], pa.float64())),
    )


# ---------------------------------------------------------------------- NumericEncoder
_X = np.array([1.0, np.nan, 4.0, 10.0, np.nan, 3.0])


@pytest.mark.parametrize(
    ("fill", "expected"),
    [("mean", (1 + 4 + 10 + 3) / 4), ("median", (3 + 4) / 2), ("zero", 0.0)],
)
def test_fill_from_training_statistics(fill: str, expected: float) -> None:
    enc = NumericEncoder.fit(_X, Feature("x", "numeric", fill=fill, standardize=False))  # type: ignore[arg-type]
    assert enc.fill_value == pytest.approx(expected)
    assert (enc.mean, enc.std) == (0.0, 1.0)
    out = enc.transform(np.array([np.nan, 2.5]))
    assert out.dtype == np.float32
    assert out.shape == (2, 1)
    np.testing.assert_allclose(out[:, 0], [expected, 2.5], rtol=1e-6)


def test_missing_indicator_column() -> None:
    enc = NumericEncoder.fit(_X, Feature("x", "numeric", missing_indicator=True, standardize=False))
    assert enc.width == 2
    out = enc.transform(_X)
    assert out.shape == (6, 2)
    np.testing.assert_array_equal(out[:, 1], np.isnan(_X).astype(np.float32))
    assert not np.isnan(out).any()
    without = NumericEncoder.fit(_X, Feature("x", "numeric"))
    assert without.width == 1
    assert without.transform(_X).shape == (6, 1)


def test_standardisation_on_training_data() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 3.0, size=500)
    enc = NumericEncoder.fit(x, Feature("x", "numeric"))
    out = enc.transform(x)[:, 0].astype(np.float64)
    assert out.mean() == pytest.approx(0.0, abs=1e-5)
    assert out.std() == pytest.approx(1.0, abs=1e-5)
    expected = StandardScaler().fit_transform(x[:, None])[:, 0]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_standardisation_ignores_nan_and_fills_before_scaling() -> None:
    enc = NumericEncoder.fit(_X, Feature("x", "numeric", fill="median"))
    known = _X[~np.isnan(_X)]
    assert enc.mean == pytest.approx(known.mean())
    assert enc.std == pytest.approx(known.std())
    out = enc.transform(np.array([np.nan]))
    assert out[0, 0] == pytest.approx((np.median(known) - known.mean()) / known.std(), rel=1e-6)


def test_constant_column_gets_std_one() -> None:
    enc = NumericEncoder.fit(np.array([7.0, 7.0, np.nan, 7.0]), Feature("x", "numeric"))
    assert enc.std == 1.0
    assert enc.mean == 7.0
    out = enc.transform(np.array([7.0, np.nan, 9.0]))
    np.testing.assert_array_equal(out[:, 0], [0.0, 0.0, 2.0])


def test_all_nan_column_gives_no_nan() -> None:
    feature = Feature("x", "numeric", missing_indicator=True)
    enc = NumericEncoder.fit(np.full(5, np.nan), feature)
    out = enc.transform(np.array([np.nan, np.nan, 3.0]))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, 1], [1.0, 1.0, 0.0])
    assert out[0, 0] == out[1, 0]


def test_numeric_round_trip() -> None:
    enc = NumericEncoder.fit(_X, Feature("x", "numeric", fill="median", missing_indicator=True))
    back = NumericEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert back == enc
    np.testing.assert_array_equal(back.transform(_X), enc.transform(_X))


# ---------------------------------------------------------------------- Encoders
def _schema() -> Schema:
    return Schema(
        features=(
            Feature("city"),
            Feature("price", "numeric", missing_indicator=True),
            Feature("user", column="uid", min_count=2),
            Feature("age", "numeric", fill="zero", standardize=False),
        ),
        tasks=(Task("click"),),
    )


def _train() -> pa.Table:
    return pa.table(
        {
            "city": ["paris", "rome", "paris", None, "oslo", "rome", "paris"],
            "price": [1.0, 2.0, None, 4.0, 5.0, 6.0, 7.0],
            "uid": [10, 11, 10, 12, 11, 10, 13],
            "age": [30.0, None, 40.0, 50.0, None, 20.0, 10.0],
            "click": [1, 0, 1, 0, 0, 1, 0],
        }
    )


def test_encoders_fit_and_encode() -> None:
    schema = _schema()
    enc = Encoders.fit(_train(), schema)
    assert enc.categorical["city"].vocabulary == ("paris", "rome", "oslo")
    assert enc.categorical["user"].vocabulary == ("10", "11")  # 12 and 13 seen once
    cat, num = enc.encode(_train(), schema)
    assert cat.dtype == np.int64
    assert cat.shape == (7, 2)
    assert cat[:, 0].tolist() == [1, 2, 1, 0, 3, 2, 1]
    assert cat[:, 1].tolist() == [1, 2, 1, 0, 2, 1, 0]
    assert num.dtype == np.float32
    assert num.shape == (7, len(schema.numeric_columns)) == (7, 3)
    price = np.array([1, 2, 4, 5, 6, 7], dtype=float)
    filled = np.array([1, 2, price.mean(), 4, 5, 6, 7])
    np.testing.assert_allclose(num[:, 0], (filled - price.mean()) / price.std(), rtol=1e-6)
    np.testing.assert_array_equal(num[:, 1], [0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(num[:, 2], [30, 0, 40, 50, 0, 20, 10])


def test_encoders_json_round_trip_gives_identical_encodings() -> None:
    schema = _schema()
    enc = Encoders.fit(_train(), schema)
    back = Encoders.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert back == enc
    new = pa.table(
        {
            "city": ["rome", "berlin", None],
            "price": [3.0, None, 100.0],
            "uid": [11.0, 13.0, None],  # floats this time: same codes as the ints
            "age": [None, 1.0, 2.0],
        }
    )
    cat_a, num_a = enc.encode(new, schema)
    cat_b, num_b = back.encode(new, schema)
    np.testing.assert_array_equal(cat_a, cat_b)
    np.testing.assert_array_equal(num_a, num_b)
    assert cat_a.tolist() == [[2, 2], [0, 0], [0, 0]]


def test_fitted_schema_sets_vocab_sizes() -> None:
    schema = _schema()
    enc = Encoders.fit(_train(), schema)
    fitted = enc.fitted_schema(schema)
    assert fitted.feature("city").vocab_size == 4
    assert fitted.feature("user").vocab_size == 3
    assert fitted.feature("price").vocab_size is None
    assert schema.feature("city").vocab_size is None


def test_encoders_for_another_schema_rejected() -> None:
    enc = Encoders.fit(_train(), _schema())
    other = Schema((Feature("city"), Feature("country")), (Task("click"),))
    with pytest.raises(DataError, match="'country'"):
        enc.encode(pa.table({"city": ["a"], "country": ["b"]}), other)


def test_encoders_numeric_text_error_names_column_and_row() -> None:
    schema = Schema((Feature("price", "numeric"),), (Task("click"),))
    table = pa.table({"price": ["1.5", "2", "cheap"], "click": [1, 0, 1]})
    with pytest.raises(DataError, match="'cheap'") as info:
        Encoders.fit(table, schema, Origin("prices.csv", first_line=2))
    message = str(info.value)
    assert "'price'" in message
    assert "row 3 (line 4) of prices.csv" in message
