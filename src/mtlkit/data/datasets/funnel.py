"""A click -> conversion funnel with known ground truth: impressions grouped by request, users and items with latent
preferences, a price per item, and the true probabilities stored next to the labels.

Generative model (all draws from one ``torch.Generator`` seeded with ``seed``; ``d`` = ``dim``):

* users u with activity ``exp(z)``, latent vectors ``P_u, R_u ~ N(0, I_d) / d^(1/4)`` (so ``<P_u, Q_i>`` has unit
  variance), biases ``b_u ~ N(0, 0.5^2)``, ``c_u ~ N(0, 0.3^2)`` and a segment ``argmax(P_u W)`` of ``segments``;
* items i with popularity ``exp(z)``, latent vectors ``Q_i, S_i`` like the users', biases ``b_i ~ N(0, 0.5^2)``,
  ``c_i ~ N(0, 0.3^2)``, a category ``argmax(Q_i V)`` of ``categories`` and a log-normal price
  ``price_i = 20 exp(0.7 z_i)``;
* requests: one user (drawn by activity) sees ``items_per_request`` items (drawn by popularity, with
  replacement), with a request context ``x ~ N(0, 1)``;
* click: ``s_c = <P_u, Q_i> + b_u + b_i + 0.3 x``, ``true_ctr = sigmoid(a_c + s_c)``, ``click ~ Bernoulli``;
* conversion, drawn only after a click: ``s_v = rho <P_u, Q_i> + sqrt(1 - rho^2) <R_u, S_i> + 0.3 b_i + c_u + c_i
  - 0.5 z_i + 0.2 x`` (``rho`` = ``shared``: the tasks share part of their preference signal and differ in the
  rest; dearer items convert less), ``true_cvr = sigmoid(a_v + s_v)``, ``conversion = click * Bernoulli(true_cvr)``
  (the entire-space label of ESMM: 0 without a click);
* intercepts ``a_c``, ``a_v`` are solved by bisection so that ``mean(true_ctr) = ctr`` and the click-weighted
  ``mean(true_ctr true_cvr) / mean(true_ctr) = cvr``: the expected CTR and CVR (given a click) hit the targets,
  and the expected overall conversion rate is ``ctr * cvr``.

Ground truth per impression: ``true_ctr``, ``true_cvr`` (given a click) and ``true_value = true_ctr * true_cvr *
price`` (expected revenue), stored with ``price`` as ``Schema.values``: never model inputs, available to score a
ranking against the ideal one (NDCG per request with ``true_value`` as gain).

Features: categorical ``user_id``, ``item_id``, ``item_category``, ``user_segment`` (hashed into ``vocab_size``
buckets by a multiplicative hash: distinct ids collide only when a field has more ids than buckets, as in
production feature hashing); numeric ``price``, ``item_quality`` (``b_i`` seen through
noise), ``user_activity`` (log activity), ``context`` (``x``) and ``noise_features`` pure-noise columns.
The group (``Schema.group``) is ``request_id``; train / valid / test split by request, never inside one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from mtlkit.data.columns import Origin
from mtlkit.data.datasets import Splits
from mtlkit.data.datasets.common import make_splits
from mtlkit.data.split import split_indices
from mtlkit.errors import DataError
from mtlkit.schema import Feature, Schema, Task

#: Value columns of the funnel schema: the item price and the ground truth.
VALUES = ("price", "true_ctr", "true_cvr", "true_value")
#: Median item price (the log-normal's scale) and the standard deviation of log price.
PRICE_MEDIAN = 20.0
PRICE_SIGMA = 0.7
#: Multiplier of the field hash (Knuth's multiplicative constant); ids stay < 2^31, so products fit int64.
_HASH = 2654435761


@dataclass(frozen=True)
class FunnelData:
    """Generated impressions: every column as a NumPy array (rows in request order) and the solved intercepts."""

    columns: dict[str, np.ndarray]
    requests: int
    ctr_intercept: float
    cvr_intercept: float

    @property
    def rows(self) -> int:
        return len(self.columns["click"])


def solve_intercept(
    scores: Tensor,
    target: float,
    weights: Tensor | None = None,
    tolerance: float = 1e-10,
    max_iterations: int = 200,
) -> float:
    """The intercept a with ``sum(w sigmoid(a + s)) / sum(w) = target`` (w = 1 when ``weights`` is None).

    The weighted mean probability m(a) is increasing in ``a``, so the root is unique. Safeguarded Newton:
    Newton steps ``a - (m(a) - target) / m'(a)`` with ``m'(a) = mean(w p (1 - p))``, inside a bisection
    bracket that every evaluation shrinks; a step that leaves the bracket is replaced by its midpoint. Stops
    when ``|m(a) - target| <= tolerance * target``.
    """
    if not 0.0 < target < 1.0:
        raise DataError(f"a target rate must be in (0, 1), got {target}")
    s = scores.double()
    w = None if weights is None else weights.double()
    total = float(s.numel()) if w is None else float(w.sum())
    if not total > 0:
        raise DataError("cannot solve an intercept with zero total weight")
    lo, hi = -60.0, 60.0
    a = math.log(target / (1.0 - target)) - float(s.mean())
    for _ in range(max_iterations):
        p = torch.sigmoid(s + a)
        slope = p * (1.0 - p)
        if w is not None:
            p, slope = p * w, slope * w
        gap = float(p.sum()) / total - target
        if abs(gap) <= tolerance * target:
            return a
        if gap < 0:
            lo = a
        else:
            hi = a
        derivative = float(slope.sum()) / total
        step = a - gap / derivative if derivative > 0 else math.nan
        a = step if lo < step < hi else 0.5 * (lo + hi)
        if hi - lo < 1e-13:
            return a
    raise DataError(f"could not solve the intercept for target rate {target} in {max_iterations} steps")


def _hash(ids: Tensor, field: int, vocab_size: int) -> np.ndarray:
    """Ids hashed into ``[0, vocab_size)`` per field (distinct fields hash differently)."""
    mixed = (ids.to(torch.int64) + 1 + field * 1_000_003) * _HASH
    return torch.remainder(mixed, vocab_size).numpy()


def generate_funnel(
    impressions: int = 1_000_000,
    users: int = 10_000,
    items: int = 2_000,
    items_per_request: int = 10,
    dim: int = 8,
    ctr: float = 0.05,
    cvr: float = 0.1,
    shared: float = 0.5,
    categories: int = 50,
    segments: int = 8,
    vocab_size: int = 100_000,
    noise_features: int = 2,
    seed: int = 0,
) -> FunnelData:
    """Draw ``impressions`` rows of the funnel (see the module docstring for the model)."""
    _check_sizes(impressions, users, items, items_per_request, dim, categories, segments, vocab_size)
    if noise_features < 0:
        raise DataError(f"noise_features must be >= 0, got {noise_features}")
    for name, rate in (("ctr", ctr), ("cvr", cvr)):
        if not 0.0 < rate < 1.0:
            raise DataError(f"{name} must be a rate in (0, 1), got {rate}")
    if not -1.0 <= shared <= 1.0:
        raise DataError(
            f"shared must be in [-1, 1] (the weight of the click preference in conversion), got {shared}"
        )
    g = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float = 1.0) -> Tensor:
        return torch.randn(*shape, generator=g) * std

    scale = dim**-0.25
    # users
    user_p, user_r = normal(users, dim, std=scale), normal(users, dim, std=scale)
    user_b, user_c = normal(users, std=0.5), normal(users, std=0.3)
    activity = normal(users)
    segment = torch.argmax(user_p @ normal(dim, segments), dim=1)
    # items
    item_q, item_s = normal(items, dim, std=scale), normal(items, dim, std=scale)
    item_b, item_c = normal(items, std=0.5), normal(items, std=0.3)
    popularity = normal(items)
    category = torch.argmax(item_q @ normal(dim, categories), dim=1)
    log_price_z = normal(items)
    price = PRICE_MEDIAN * torch.exp(PRICE_SIGMA * log_price_z)
    quality = item_b + normal(items, std=0.5)
    # requests and impressions
    requests = -(-impressions // items_per_request)
    request = torch.arange(impressions) // items_per_request
    request_user = torch.multinomial(torch.exp(activity), requests, replacement=True, generator=g)
    context = normal(requests)
    user = request_user[request]
    item = torch.multinomial(torch.exp(popularity), impressions, replacement=True, generator=g)
    x = context[request]
    affinity = (user_p[user] * item_q[item]).sum(1)
    own = (user_r[user] * item_s[item]).sum(1)
    s_click = affinity + user_b[user] + item_b[item] + 0.3 * x
    s_conv = (
        shared * affinity
        + math.sqrt(max(1.0 - shared**2, 0.0)) * own
        + 0.3 * item_b[item]
        + user_c[user]
        + item_c[item]
        - 0.5 * log_price_z[item]
        + 0.2 * x
    )
    a_click = solve_intercept(s_click, ctr)
    true_ctr = torch.sigmoid(s_click + a_click)
    a_conv = solve_intercept(s_conv, cvr, weights=true_ctr)
    true_cvr = torch.sigmoid(s_conv + a_conv)
    click = torch.bernoulli(true_ctr, generator=g)
    conversion = click * torch.bernoulli(true_cvr, generator=g)
    item_price = price[item]
    columns: dict[str, np.ndarray] = {
        "request_id": request.numpy(),
        "user_id": _hash(user, 0, vocab_size),
        "item_id": _hash(item, 1, vocab_size),
        "item_category": _hash(category[item], 2, vocab_size),
        "user_segment": _hash(segment[user], 3, vocab_size),
        "price": item_price.numpy(),
        "item_quality": quality[item].numpy(),
        "user_activity": activity[user].numpy(),
        "context": x.numpy(),
    }
    for k in range(noise_features):
        columns[f"noise_{k + 1}"] = normal(impressions).numpy()
    columns.update(
        {
            "click": click.numpy(),
            "conversion": conversion.numpy(),
            "true_ctr": true_ctr.numpy(),
            "true_cvr": true_cvr.numpy(),
            "true_value": (true_ctr * true_cvr * item_price).numpy(),
        }
    )
    return FunnelData(columns, requests, a_click, a_conv)


def _check_sizes(impressions: int, users: int, items: int, *rest: int) -> None:
    names = (
        "impressions",
        "users",
        "items",
        "items_per_request",
        "dim",
        "categories",
        "segments",
        "vocab_size",
    )
    for name, value in zip(names, (impressions, users, items, *rest), strict=True):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{name} must be an integer >= 1, got {value!r}")
    if impressions >= 2**31 or users >= 2**31 or items >= 2**31:
        raise DataError(
            f"impressions, users and items must each be < 2^31, got {impressions}, {users}, {items}"
        )


def funnel_schema(noise_features: int = 2, embedding_dim: int = 8, depends_on: bool = False) -> Schema:
    """The funnel's Schema: ids and numeric features, tasks click and conversion, group and value columns."""
    ids = ("user_id", "item_id", "item_category", "user_segment")
    noise = (f"noise_{k + 1}" for k in range(noise_features))
    numeric = ("price", "item_quality", "user_activity", "context", *noise)
    features = tuple(Feature(c, "categorical", embedding_dim=embedding_dim) for c in ids) + tuple(
        Feature(c, "numeric") for c in numeric
    )
    tasks = (Task("click"), Task("conversion", depends_on="click" if depends_on else None))
    return Schema(features, tasks, group="request_id", values=VALUES)


def load_funnel(
    impressions: int = 1_000_000,
    users: int = 10_000,
    items: int = 2_000,
    items_per_request: int = 10,
    dim: int = 8,
    ctr: float = 0.05,
    cvr: float = 0.1,
    shared: float = 0.5,
    categories: int = 50,
    segments: int = 8,
    vocab_size: int = 100_000,
    noise_features: int = 2,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    embedding_dim: int = 8,
    depends_on: bool = False,
    seed: int = 0,
) -> Splits:
    """The funnel as Splits (tasks ``click`` and ``conversion``, group ``request_id``, values ``price``,
    ``true_ctr``, ``true_cvr``, ``true_value``).

    Args:
        impressions: rows in total; ``users`` / ``items``: how many exist; ``items_per_request``: rows per request.
        dim: width of the latent preference vectors.
        ctr: target mean click rate; ``cvr``: target mean conversion rate given a click (overall ``ctr * cvr``).
        shared: in [-1, 1], how much of the click preference the conversion preference shares.
        categories / segments: item categories and user segments (derived from the latent vectors).
        vocab_size: buckets the categorical ids are hashed into.
        noise_features: numeric columns of pure noise.
        valid_fraction / test_fraction: shares of the requests in valid and test (the rest train).
        embedding_dim: embedding width of every categorical feature.
        depends_on: give ``conversion`` ``depends_on="click"`` (AITM, and ESMM without ctr_task / cvr_task).
        seed: the one seed of every draw and of the split.
    """
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise DataError(f"{name} must be in (0, 1), got {value}")
    if valid_fraction + test_fraction >= 1.0:
        raise DataError(
            f"valid_fraction + test_fraction must be < 1 to leave requests for training, "
            f"got {valid_fraction} + {test_fraction}"
        )
    data = generate_funnel(
        impressions,
        users,
        items,
        items_per_request,
        dim,
        ctr,
        cvr,
        shared,
        categories,
        segments,
        vocab_size,
        noise_features,
        seed,
    )
    schema = funnel_schema(noise_features, embedding_dim, depends_on)
    if data.requests < 3:
        raise DataError(
            f"funnel: {impressions} impressions make only {data.requests} request(s) of {items_per_request}; "
            f"need at least 3 to split by request"
        )
    fractions = (1.0 - valid_fraction - test_fraction, valid_fraction, test_fraction)
    parts_of_requests = split_indices(data.requests, fractions, seed)
    arrow = pa.table(data.columns)
    part_of = np.empty(data.requests, dtype=np.int8)
    for k, chosen in enumerate(parts_of_requests):
        part_of[chosen] = k
    row_part = part_of[data.columns["request_id"]]
    parts: dict[str, tuple[pa.Table, Origin]] = {}
    for k, name in enumerate(("train", "valid", "test")):
        rows = np.flatnonzero(row_part == k)
        if rows.size == 0:
            raise DataError(
                f"funnel: the {name} part got no requests ({data.requests} requests, fractions {list(fractions)}); "
                f"raise impressions or the {name} fraction"
            )
        parts[name] = (arrow.take(pa.array(rows)), Origin(f"<funnel {name}>"))
    clicks = data.columns["click"]
    convs = data.columns["conversion"]
    note = (
        f"funnel generator: {data.rows} impressions in {data.requests} requests of {items_per_request}, "
        f"{users} users, {items} items, dim {dim}, shared {shared}; target CTR {ctr:g} (realised "
        f"{clicks.mean():.4f}), CVR given click {cvr:g} (realised {convs.sum() / max(clicks.sum(), 1):.4f}), "
        f"conversion rate {convs.mean():.4%}; split by request {list(fractions)}, seed {seed}"
    )
    return make_splits("funnel", schema, parts, note)


__all__ = ["VALUES", "FunnelData", "funnel_schema", "generate_funnel", "load_funnel", "solve_intercept"]
