"""Per-task losses: values against references, masking and weighting, stability, registry, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.losses import (
    BCE,
    CE,
    MAE,
    MSE,
    Focal,
    Huber,
    Loss,
    LossSet,
    MulticlassFocal,
    PairwiseLogistic,
    create_loss,
    list_losses,
    loss_class,
    pairwise_logistic,
    task_losses,
)
from mtlkit.schema import LOSSES as SCHEMA_LOSSES
from mtlkit.schema import TaskKind

NAN = math.nan


def _schema(*tasks: Task) -> Schema:
    return Schema((Feature("x", "numeric"),), tasks)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _binary(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    return torch.randn(n, generator=g) * 3, torch.randint(0, 2, (n,), generator=g).float()


def _multiclass(n: int = 64, k: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    return torch.randn(n, k, generator=g) * 3, torch.randint(0, k, (n,), generator=g).float()


# ---------------------------------------------------------------------------------------------- values
def test_bce_matches_torch() -> None:
    z, y = _binary()
    out = BCE()(z, y)
    assert out.shape == (64,)
    torch.testing.assert_close(out, F.binary_cross_entropy_with_logits(z, y, reduction="none"))


def test_bce_pos_weight_weights_the_positive_term() -> None:
    z, y = _binary()
    w = 7.5
    expected = -(w * y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z))
    torch.testing.assert_close(BCE(pos_weight=w)(z, y), expected)
    torch.testing.assert_close(BCE(pos_weight=1)(z, y), BCE()(z, y))
    # the expected loss over labels with P(y = 1) = p is minimised where the odds are w times p / (1 - p)
    p = 0.02
    logit = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([logit], lr=2.0)
    for _ in range(500):
        optimizer.zero_grad()
        bce = BCE(pos_weight=w)
        loss = p * bce(logit, torch.ones(1)) + (1 - p) * bce(logit, torch.zeros(1))
        loss.sum().backward()
        optimizer.step()
    assert math.isclose(math.exp(logit.item()), w * p / (1 - p), rel_tol=1e-3)


def test_focal_with_gamma_0_and_no_alpha_is_bce() -> None:
    z, y = _binary()
    torch.testing.assert_close(Focal(gamma=0.0, alpha=None)(z, y), BCE()(z, y))


def test_multiclass_focal_with_gamma_0_is_ce() -> None:
    z, y = _multiclass()
    torch.testing.assert_close(MulticlassFocal(gamma=0.0)(z, y), CE()(z, y))


def test_focal_hand_values() -> None:
    """p = sigmoid(z); FL = -alpha (1-p)^g log p for y = 1, -(1-alpha) p^g log(1-p) for y = 0."""
    z = torch.tensor([0.0, 0.0, math.log(3.0), math.log(3.0)])  # p = 0.5, 0.5, 0.75, 0.75
    y = torch.tensor([1.0, 0.0, 1.0, 0.0])
    alpha, gamma = 0.25, 2.0
    expected = [
        alpha * 0.5**2 * math.log(2.0),
        (1 - alpha) * 0.5**2 * math.log(2.0),
        alpha * 0.25**2 * -math.log(0.75),
        (1 - alpha) * 0.75**2 * -math.log(0.25),
    ]
    torch.testing.assert_close(Focal(gamma=gamma, alpha=alpha)(z, y), torch.tensor(expected))
    # alpha=None weights both classes by 1
    torch.testing.assert_close(
        Focal(gamma=gamma, alpha=None)(z, y),
        torch.tensor([e / a for e, a in zip(expected, [alpha, 1 - alpha] * 2, strict=True)]),
    )


def test_multiclass_focal_hand_values() -> None:
    z = torch.log(torch.tensor([[1.0, 2.0, 1.0], [1.0, 2.0, 1.0]]))  # p = 0.25, 0.5, 0.25
    y = torch.tensor([1.0, 0.0])
    expected = torch.tensor([-(0.5**2) * math.log(0.5), -(0.75**2) * math.log(0.25)])
    torch.testing.assert_close(MulticlassFocal(gamma=2.0)(z, y), expected)


def test_focal_down_weights_easy_examples() -> None:
    z = torch.tensor([4.0, 0.5])  # an easy and a hard positive
    y = torch.ones(2)
    ratio = Focal(alpha=None)(z, y) / BCE()(z, y)
    assert ratio[0] < 0.001 < ratio[1]


@pytest.mark.parametrize("delta", [0.3, 1.0, 2.5])
def test_huber_matches_torch(delta: float) -> None:
    z, _ = _binary()
    y = torch.randn(64, generator=_gen(1)) * 3
    torch.testing.assert_close(Huber(delta=delta)(z, y), F.huber_loss(z, y, reduction="none", delta=delta))


def test_mse_and_mae_match_torch() -> None:
    z, _ = _binary()
    y = torch.randn(64, generator=_gen(1))
    torch.testing.assert_close(MSE()(z, y), F.mse_loss(z, y, reduction="none"))
    torch.testing.assert_close(MAE()(z, y), F.l1_loss(z, y, reduction="none"))


def test_ce_matches_torch_on_float_class_indices() -> None:
    z, y = _multiclass()
    out = CE()(z, y)
    assert out.shape == (64,)
    torch.testing.assert_close(out, F.cross_entropy(z, y.long(), reduction="none"))


@pytest.mark.parametrize(
    ("loss", "multiclass"),
    [
        (Focal(gamma=0.5, alpha=0.25), False),
        (Focal(gamma=2.0, alpha=None), False),
        (MulticlassFocal(0.5), True),
    ],
    ids=repr,
)
def test_focal_gradients_match_finite_differences(loss: Loss, multiclass: bool) -> None:
    z, y = _multiclass(8, 4) if multiclass else _binary(8)
    z = z.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: loss(t, y.double()), (z,))


# ---------------------------------------------------------------------------------------------- masking
def test_nan_labels_are_masked_from_their_own_task_only() -> None:
    schema = _schema(Task("a", "binary"), Task("b", "regression"))
    z, ya = _binary(6)
    zb = torch.arange(6.0)
    yb = torch.linspace(-1, 1, 6)
    full = torch.stack([ya, yb], dim=1)
    holes = full.clone()
    holes[[1, 4], 0] = NAN
    logits = {"a": z, "b": zb}
    out = task_losses(schema, logits, holes)
    assert out.shape == (2,)
    keep = torch.tensor([0, 2, 3, 5])
    torch.testing.assert_close(out[0], BCE()(z[keep], ya[keep]).mean())
    torch.testing.assert_close(out[1], task_losses(schema, logits, full)[1])


def test_masked_rows_get_exactly_zero_gradient() -> None:
    schema = _schema(Task("a", "binary"))
    z = torch.randn(5, generator=_gen()).requires_grad_()
    labels = torch.tensor([[1.0], [NAN], [0.0], [NAN], [1.0]])
    task_losses(schema, {"a": z}, labels).sum().backward()
    assert z.grad is not None
    assert torch.isfinite(z.grad).all()
    assert z.grad[[1, 3]].eq(0).all()
    assert z.grad[[0, 2, 4]].ne(0).all()


def test_weighted_mean_hand_case() -> None:
    """MSE with logits 0: (1*1^2 + 2*2^2 + 0*3^2) / (1 + 2 + 0) = 3; the NaN row's weight 5 does not count."""
    schema = _schema(Task("r", "regression"))
    labels = torch.tensor([[1.0], [2.0], [NAN], [3.0]])
    weights = torch.tensor([1.0, 2.0, 5.0, 0.0])
    out = task_losses(schema, {"r": torch.zeros(4)}, labels, weights)
    torch.testing.assert_close(out, torch.tensor([3.0]))


def test_unit_weights_equal_no_weights() -> None:
    schema = _schema(Task("a", "binary"), Task("r", "regression", loss="huber"))
    z, y = _binary(10)
    labels = torch.stack([y, y * 2], dim=1)
    labels[3, 1] = NAN
    logits = {"a": z, "r": z}
    torch.testing.assert_close(
        task_losses(schema, logits, labels), task_losses(schema, logits, labels, torch.ones(10))
    )


@pytest.mark.parametrize("case", ["all_missing", "zero_weight", "empty_batch"])
def test_task_without_labelled_weight_gives_zero_and_finite_gradients(case: str) -> None:
    schema = _schema(
        Task("a", "binary", loss="focal"),
        Task("r", "regression"),
        Task("m", "multiclass", num_classes=3),
    )
    n = 0 if case == "empty_batch" else 4
    z = torch.randn(n, generator=_gen()).requires_grad_()
    zm = torch.randn(n, 3, generator=_gen()).requires_grad_()
    labels = torch.full((n, 3), NAN)
    weights = None
    if case == "zero_weight":
        labels = torch.tensor([[1.0, 0.5, 2.0]] * n)
        weights = torch.zeros(n)
    out = task_losses(schema, {"a": z, "r": z * 2, "m": zm}, labels, weights)
    assert out.tolist() == [0.0, 0.0, 0.0]
    out.sum().backward()
    for grad in (z.grad, zm.grad):
        assert grad is not None
        assert torch.isfinite(grad).all()
        assert grad.eq(0).all()


def test_other_tasks_still_train_when_one_is_all_missing() -> None:
    schema = _schema(Task("a", "binary"), Task("b", "binary"))
    z = torch.randn(4, generator=_gen()).requires_grad_()
    labels = torch.tensor([[NAN, 1.0], [NAN, 0.0], [NAN, 1.0], [NAN, 0.0]])
    out = task_losses(schema, {"a": z, "b": z}, labels)
    assert out[0].item() == 0.0
    out.sum().backward()
    assert z.grad is not None
    torch.testing.assert_close(z.grad, (torch.sigmoid(z) - labels[:, 1]).detach() / 4)


@pytest.mark.parametrize(
    ("name", "kind", "params"),
    [
        ("bce", "binary", {}),
        ("focal", "binary", {}),
        ("focal", "binary", {"gamma": 0.5, "alpha": None}),
        ("focal", "binary", {"gamma": 0.0}),
        ("mse", "regression", {}),
        ("huber", "regression", {"delta": 0.1}),
        ("mae", "regression", {}),
        ("ce", "multiclass", {}),
        ("focal", "multiclass", {}),
        ("focal", "multiclass", {"gamma": 0.5}),
    ],
)
def test_extreme_logits_give_finite_loss_and_gradient(
    name: str, kind: TaskKind, params: dict[str, float]
) -> None:
    big = 1e4
    if kind == "multiclass":
        z = torch.tensor([[big, -big, 0.0], [-big, big, 0.0], [big, -big, 0.0], [0.0, 0.0, big]])
        y = torch.tensor([0.0, 0.0, 1.0, NAN])
        task = Task("t", kind, num_classes=3, loss=name)
    else:
        z = torch.tensor([big, -big, big, -big, big])
        y = torch.tensor([1.0, 1.0, 0.0, 0.0, NAN])
        task = Task("t", kind, loss=name)
    z.requires_grad_()
    loss = create_loss(name, kind, **params)
    out = task_losses(_schema(task), {"t": z}, y.unsqueeze(1), losses={"t": loss})
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert z.grad is not None
    assert torch.isfinite(z.grad).all()


def test_result_follows_task_order_and_ignores_static_weight() -> None:
    a, b = Task("a", "binary", weight=5.0), Task("b", "regression")
    z, y = _binary(8)
    logits = {"a": z, "b": z}
    ab = task_losses(_schema(a, b), logits, torch.stack([y, y * 3], 1))
    ba = task_losses(_schema(b, a), logits, torch.stack([y * 3, y], 1))
    torch.testing.assert_close(ab, ba.flip(0))
    torch.testing.assert_close(ab[0], BCE()(z, y).mean())


def test_double_precision_is_kept() -> None:
    schema = _schema(Task("a", "binary"), Task("r", "regression"))
    z, y = _binary(4)
    out = task_losses(schema, {"a": z.double(), "r": z.double()}, torch.stack([y, y], 1))
    assert out.dtype == torch.float64


# ---------------------------------------------------------------------------------------------- shapes
def test_multiclass_shapes() -> None:
    schema = _schema(Task("m", "multiclass", num_classes=4), Task("a", "binary"))
    zm, ym = _multiclass(6, 4)
    z, y = _binary(6)
    labels = torch.stack([ym, y], 1)
    labels[2, 0] = NAN
    out = task_losses(schema, {"m": zm, "a": z}, labels)
    keep = torch.tensor([0, 1, 3, 4, 5])
    torch.testing.assert_close(out[0], F.cross_entropy(zm[keep], ym[keep].long()))
    assert MulticlassFocal()(zm, ym).shape == (6,)


def test_wrong_shapes_are_errors_naming_them() -> None:
    schema = _schema(Task("a", "binary"), Task("m", "multiclass", num_classes=3))
    labels = torch.zeros(5, 2)
    good = {"a": torch.zeros(5), "m": torch.zeros(5, 3)}
    with pytest.raises(ValueError, match=r"task 'a'.*\[5, 1\]"):
        task_losses(schema, {**good, "a": torch.zeros(5, 1)}, labels)
    with pytest.raises(ValueError, match=r"task 'm' has 3 classes, got logits \[5, 4\]"):
        task_losses(schema, {**good, "m": torch.zeros(5, 4)}, labels)
    with pytest.raises(ValueError, match=r"labels must be \[B, 2\]"):
        task_losses(schema, good, torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"weights must be \[B\] = \[5\]"):
        task_losses(schema, good, labels, torch.ones(4))
    with pytest.raises(MtlkitError, match="no logits for task 'm'"):
        task_losses(schema, {"a": good["a"]}, labels)
    with pytest.raises(ValueError, match=r"logits \[4, 1\]"):
        MSE()(torch.zeros(4, 1), torch.zeros(4))  # would broadcast to [4, 4]


def test_a_loss_for_the_wrong_kind_is_an_error() -> None:
    schema = _schema(Task("a", "binary"))
    with pytest.raises(MtlkitError, match=r"task 'a' is binary but its loss MSE\(\) is for regression"):
        task_losses(schema, {"a": torch.zeros(3)}, torch.zeros(3, 1), losses={"a": MSE()})


# ---------------------------------------------------------------------------------------------- registry
def test_registry_agrees_with_schema_losses() -> None:
    """Every (kind, name) of schema.LOSSES is registered for that kind, in the same order (default first)."""
    for kind, names in SCHEMA_LOSSES.items():
        assert tuple(list_losses(kind)) == names
        for name in names:
            loss = create_loss(name, kind)
            assert isinstance(loss, Loss)
            assert (loss.name, loss.kind) == (name, kind)
    assert set(list_losses()) == {n for names in SCHEMA_LOSSES.values() for n in names}


def test_loss_set_builds_each_tasks_loss_from_the_schema() -> None:
    schema = _schema(
        Task("click", "binary", loss="focal"),
        Task("time", "regression", loss="huber"),
        Task("cat", "multiclass", num_classes=3, loss="focal"),
        Task("buy", "binary"),
    )
    losses = LossSet(schema, {"click": {"gamma": 1.0}, "time": {"delta": 2.0}})
    assert [repr(m) for m in losses.losses.values()] == [
        "Focal(gamma=1.0, alpha=0.25)",
        "Huber(delta=2.0)",
        "MulticlassFocal(gamma=2.0)",
        "BCE(pos_weight=1.0)",
    ]
    z, y = _binary(6)
    zm, ym = _multiclass(6, 3)
    logits = {"click": z, "time": z, "cat": zm, "buy": z}
    labels = torch.stack([y, y, ym, y], 1)
    out = losses(logits, labels)
    assert out.shape == (4,)
    torch.testing.assert_close(out, task_losses(schema, logits, labels, losses=dict(losses.losses.items())))
    torch.testing.assert_close(out[3], BCE()(z, y).mean())


def test_loss_set_errors_name_the_task() -> None:
    schema = _schema(Task("click", "binary"), Task("cat", "multiclass", num_classes=3, loss="focal"))
    with pytest.raises(MtlkitError, match=r"'clik', which is not a task \(did you mean 'click'\?\)"):
        LossSet(schema, {"clik": {}})
    with pytest.raises(
        MtlkitError, match=r"task 'cat': loss 'focal' for multiclass tasks has no parameter 'alpha'"
    ):
        LossSet(schema, {"cat": {"alpha": 0.25}})
    with pytest.raises(
        MtlkitError, match=r"task 'click': loss 'bce' .* no parameter 'gamma'; it accepts 'pos_weight'"
    ):
        LossSet(schema, {"click": {"gamma": 2.0}})
    with pytest.raises(MtlkitError, match=r"task 'click': loss 'bce': pos_weight must be > 0, got -1"):
        LossSet(schema, {"click": {"pos_weight": -1}})
    with pytest.raises(
        MtlkitError, match=r"loss parameters given for 'click', whose loss is set by its family"
    ):
        LossSet(schema, {"click": {"pos_weight": 2.0}}, overrides={"click": BCE()})


def test_registry_errors_list_what_is_accepted() -> None:
    with pytest.raises(
        MtlkitError, match=r"unknown loss 'foca' \(did you mean 'focal'\?\); available: 'bce'"
    ):
        create_loss("foca")
    with pytest.raises(MtlkitError, match=r"'mse' does not apply to binary tasks.*accept 'bce', 'focal'"):
        create_loss("mse", "binary")
    with pytest.raises(
        MtlkitError, match=r"'focal' serves several task kinds: pass kind='binary' or kind='multiclass'"
    ):
        create_loss("focal")
    with pytest.raises(
        MtlkitError, match=r"no parameter 'gama' \(did you mean 'gamma'\?\); it accepts 'gamma'"
    ):
        create_loss("focal", "binary", gama=1.0)
    with pytest.raises(MtlkitError, match=r"loss 'huber': delta must be > 0, got -1"):
        create_loss("huber", delta=-1)
    with pytest.raises(MtlkitError, match=r"unknown task kind 'binray' \(did you mean 'binary'\?\)"):
        create_loss("bce", "binray")
    assert loss_class("huber") is Huber
    assert loss_class("focal", "multiclass") is MulticlassFocal


# ---------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Focal(gamma=-0.5), "gamma must be >= 0, got -0.5"),
        (lambda: MulticlassFocal(gamma=-1.0), "gamma must be >= 0, got -1.0"),
        (lambda: Focal(alpha=1.5), r"alpha must be in \[0, 1\] or None, got 1.5"),
        (lambda: Focal(alpha=-0.1), r"alpha must be in \[0, 1\] or None, got -0.1"),
        (lambda: Huber(delta=0.0), "delta must be > 0, got 0.0"),
        (lambda: Huber(delta=-2.0), "delta must be > 0, got -2.0"),
        (lambda: BCE(pos_weight=0.0), "pos_weight must be > 0, got 0.0"),
        (lambda: BCE(pos_weight=math.inf), "pos_weight must be a finite number, got inf"),
        (lambda: Focal(gamma=math.nan), "gamma must be a finite number, got nan"),
        (lambda: Focal(gamma=True), "gamma must be a finite number, got True"),
        (
            lambda: Huber(delta="1"),  # type: ignore[arg-type]
            "delta must be a finite number, got '1'",
        ),
    ],
)
def test_invalid_hyperparameters_name_the_value(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_boundary_hyperparameters_are_accepted() -> None:
    assert repr(Focal(gamma=0, alpha=0)) == "Focal(gamma=0.0, alpha=0.0)"
    assert repr(Focal(alpha=1)) == "Focal(gamma=2.0, alpha=1.0)"
    assert repr(Huber(delta=np.float64(0.5))) == "Huber(delta=0.5)"


# ---------------------------------------------------------------------------------------------- pairwise
def _pairwise_by_loops(
    s: torch.Tensor, y: list[float], g: list[int] | None, w: list[float] | None, sigma: float = 1.0
) -> torch.Tensor:
    """RankNet written as the textbook double loop over ordered pairs (i above j, same group)."""
    total, count = s.new_zeros(()), 0.0
    for i in range(len(y)):
        for j in range(len(y)):
            same = g is None or g[i] == g[j]
            if same and not math.isnan(y[i]) and not math.isnan(y[j]) and y[i] > y[j]:
                p = 1.0 if w is None else w[i] * w[j]
                total = total + p * torch.log1p(torch.exp(-sigma * (s[i] - s[j])))
                count += p
    return total / count if count else s.new_zeros(())


PAIR_GRADES = [2.0, 1.0, 0.0, 0.0, 1.0, NAN, 2.0, 0.0, 1.0, 1.0]  # ties and a missing grade
PAIR_GROUPS = [3, 3, 3, 3, 7, 7, 7, 1, 1, 1]  # groups are not sorted and not contiguous in id


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_pairwise_logistic_equals_the_double_loop(weighted: bool, sigma: float) -> None:
    g = _gen(3)
    w = (torch.rand(10, generator=g) + 0.1).tolist() if weighted else None
    s1 = (torch.randn(10, generator=g) * 2).requires_grad_()
    s2 = s1.detach().clone().requires_grad_()
    order = torch.randperm(10, generator=g)  # the row order of a batch must not matter
    got = pairwise_logistic(
        s1[order],
        torch.tensor(PAIR_GRADES)[order],
        torch.tensor(PAIR_GROUPS)[order],
        None if w is None else torch.tensor(w)[order],
        sigma,
    )
    expected = _pairwise_by_loops(s2, PAIR_GRADES, PAIR_GROUPS, w, sigma)
    torch.testing.assert_close(got, expected)
    got.backward()
    expected.backward()
    assert s1.grad is not None
    assert s2.grad is not None
    torch.testing.assert_close(s1.grad, s2.grad)
    assert float(s1.grad[5]) == 0.0  # the row without a grade is in no pair


def test_pairwise_logistic_is_zero_without_pairs() -> None:
    s = torch.randn(6, generator=_gen(), requires_grad=True)
    cases = [
        (
            torch.tensor([1.0, 1.0, 0.0, 0.0, 2.0, 2.0]),
            torch.tensor([0, 0, 1, 1, 2, 2]),
        ),  # ties within groups
        (torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0, 2.0]), torch.arange(6)),  # one row per group
        (torch.full((6,), NAN), None),  # nothing labelled
    ]
    for grades, groups in cases:
        loss = pairwise_logistic(s, grades, groups)
        (grad,) = torch.autograd.grad(loss, s)
        assert float(loss.detach()) == 0.0
        assert torch.equal(grad, torch.zeros(6))
    empty = pairwise_logistic(torch.zeros(0, requires_grad=True), torch.zeros(0))
    assert float(empty.detach()) == 0.0


def test_pairwise_logistic_without_groups_is_one_group_and_per_row_sums_to_it() -> None:
    s = torch.randn(8, generator=_gen(1))
    y = torch.tensor([2.0, 0.0, 1.0, 1.0, 0.0, 2.0, 0.0, 1.0])
    one = pairwise_logistic(s, y, torch.full((8,), 4))
    torch.testing.assert_close(pairwise_logistic(s, y, None), one)
    pairs = float((y.unsqueeze(1) > y.unsqueeze(0)).sum())
    torch.testing.assert_close(PairwiseLogistic()(s, y).sum() / pairs, one)


def test_task_losses_pass_groups_to_a_grouped_loss_only() -> None:
    schema = _schema(Task("rank", "binary"), Task("click", "binary"))
    g = _gen(2)
    logits = {"rank": torch.randn(10, generator=g), "click": torch.randn(10, generator=g)}
    labels = torch.stack([torch.tensor(PAIR_GRADES), torch.randint(0, 2, (10,), generator=g).float()], 1)
    groups = torch.tensor(PAIR_GROUPS)
    weights = torch.rand(10, generator=g)
    losses = LossSet(schema, overrides={"rank": PairwiseLogistic()})
    out = losses(logits, labels, weights, groups)
    torch.testing.assert_close(out[0], pairwise_logistic(logits["rank"], labels[:, 0], groups, weights))
    torch.testing.assert_close(
        out[1], task_losses(schema, {"click": logits["click"], "rank": logits["rank"]}, labels, weights)[1]
    )
    assert float(losses(logits, labels, weights, torch.arange(10))[0]) == 0.0  # every row its own group


def test_loss_overrides_are_checked() -> None:
    with pytest.raises(MtlkitError, match="a loss override given for 'rnak', which is not a task"):
        LossSet(_schema(Task("rank", "binary")), overrides={"rnak": PairwiseLogistic()})
    with pytest.raises(MtlkitError, match="task 'time' is regression but its loss override"):
        LossSet(_schema(Task("time", "regression")), overrides={"time": PairwiseLogistic()})
    with pytest.raises(ValueError, match=r"sigma must be > 0, got -1\.0"):
        PairwiseLogistic(sigma=-1.0)


def _one_by_one(schema: Schema, logits: dict[str, torch.Tensor], labels: torch.Tensor, weights, losses):
    """Each task's L_j from a one-task schema: what task_losses gives without computing tasks together."""
    out = []
    for j, task in enumerate(schema.tasks):
        single = Schema(schema.features, (task,))
        out.append(
            task_losses(single, {task.name: logits[task.name]}, labels[:, j : j + 1], weights, losses)[0]
        )
    return torch.stack(out)


@pytest.mark.parametrize("weighted", [False, True])
def test_tasks_sharing_an_elementwise_loss_are_computed_together_with_the_same_values_and_gradients(
    weighted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tasks whose losses are the same elementwise loss (class and hyperparameters) are computed on stacked
    logits; values and gradients equal the one-task-at-a-time computation, with missing labels, a task without
    any label, groups of non-adjacent tasks, and tasks left alone (another focal gamma, a multiclass task)."""
    from mtlkit.losses import LossSet

    tasks = (
        Task("a"), Task("r1", "regression"), Task("b"), Task("f", loss="focal"),
        Task("c"), Task("r2", "regression"), Task("m", "multiclass", num_classes=3), Task("g", loss="focal"),
    )  # fmt: skip
    schema = Schema((Feature("x", "numeric"),), tasks)
    params = {"g": {"gamma": 1.0}}  # f and g: focal with other hyperparameters, not together
    losses = dict(LossSet(schema, params).losses.items())
    gen = torch.Generator().manual_seed(0)
    rows = 64
    labels = torch.rand(rows, len(tasks), generator=gen).round()
    labels[:, 1] = torch.randn(rows, generator=gen)
    labels[:, 5] = torch.randn(rows, generator=gen)
    labels[:, 6] = torch.randint(0, 3, (rows,), generator=gen).float()
    labels[torch.rand(rows, len(tasks), generator=gen) < 0.3] = math.nan
    labels[:, 2] = math.nan  # task b: no label at all -> 0
    weights = torch.rand(rows, generator=gen) if weighted else None
    logits = {
        t.name: torch.randn((rows, 3) if t.kind == "multiclass" else (rows,), generator=gen).requires_grad_()
        for t in tasks
    }
    from mtlkit import losses as module

    groups: list[list[int]] = []
    computed = module._masked_means
    monkeypatch.setattr(
        module, "_masked_means", lambda fn, *args: (groups.append(list(args[-1])), computed(fn, *args))[1]
    )
    together = task_losses(schema, logits, labels, weights, losses)
    assert groups == [[0, 2, 4], [1, 5]]  # the BCE tasks, the MSE tasks; focal f and g differ in gamma
    alone = _one_by_one(schema, logits, labels, weights, losses)
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-7)
    assert together[2] == 0.0
    mix = torch.linspace(0.5, 2.0, len(tasks))
    grads = torch.autograd.grad((together * mix).sum(), list(logits.values()))
    expected = torch.autograd.grad((alone * mix).sum(), list(logits.values()))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)


def test_one_loss_for_every_task_gives_batched_per_task_gradients() -> None:
    """With every task on the same loss the [T] vector comes from one computation; the engine's batched
    vector-Jacobian products (is_grads_batched) through it equal one backward per task."""
    schema = Schema((Feature("x", "numeric"),), tuple(Task(n) for n in "abcde"))
    gen = torch.Generator().manual_seed(1)
    labels = torch.rand(32, 5, generator=gen).round()
    labels[torch.rand(32, 5, generator=gen) < 0.2] = math.nan
    z = torch.randn(32, generator=gen).requires_grad_()
    logits = {n: z * (k + 1) for k, n in enumerate("abcde")}
    values = task_losses(schema, logits, labels)
    rows = torch.autograd.grad(values, z, torch.eye(5), is_grads_batched=True, retain_graph=True)[0]
    for k in range(5):
        (one,) = torch.autograd.grad(values[k], z, retain_graph=True)
        torch.testing.assert_close(rows[k], one)
