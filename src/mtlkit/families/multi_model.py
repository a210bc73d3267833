"""One model per objective, fused: independent single-task networks, one per task, trained side by side.

The first solution of the seed document (多模型融合): build one model per objective and combine their scores
with the run's fusion (weighted sum, or the product of powers ctr^a * cvr^b * price^c; ``mtlkit.fusion``). No
parameter is shared, so no objective can help or hurt another; each still costs its own model at serving time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtlkit.data.datasets import Splits
from mtlkit.families.base import Family
from mtlkit.schema import Schema

#: The architecture every multi_model run trains: per-task networks with no shared parameter.
MODEL = "single_task"
#: Equal task weights: each task's network gets exactly its own task's loss gradient (times Task.weight).
BALANCER = "static"


class MultiModel(Family):
    """T single-task models trained as one ``single_task`` architecture with ``share_embedding=False``.

    ``single_task`` holds, per task k, its own embedding, bottom MLP and tower: no parameter is shared. The run
    minimises ``sum_k w_k L_k`` with the ``static`` balancer (``w_k = Task.weight``), and since network k's
    parameters appear only in ``L_k``, their gradient is ``w_k grad L_k``: each network is trained exactly as
    in its own single-task run on the same batches (with Adam a constant ``w_k`` barely matters). It differs from
    T separate runs only in (1) the initial weights (one seeded draw for all networks), (2) one stopping epoch
    for all networks (``training.early_stopping.monitor``, e.g. the mean AUC) and (3) ``training.grad_clip``,
    which clips the norm over every network's gradient together (leave it off for exact independence).
    One run with the configured epochs is the training budget of all T models together, as for an MTL model.

    The configured ``model`` and ``balancer`` are replaced (the run's note says so); predictions are the
    per-task probabilities, fused by the run's ``fusion``.

    Args:
        model_params: parameters of the ``single_task`` architecture (``bottom_sizes``, ``tower_sizes``,
            ``dropout``, ...); ``share_embedding`` must stay False (it would share the embedding).
    """

    fixed_model = MODEL
    fixed_balancer = BALANCER

    def __init__(self, schema: Schema, model_params: dict[str, Any] | None = None) -> None:
        super().__init__(schema)
        if model_params is not None and not isinstance(model_params, Mapping):
            raise ValueError(
                f"model_params must be a mapping of single_task parameters, got {model_params!r}"
            )
        params = dict(model_params or {})
        if params.get("share_embedding", False):
            raise ValueError(
                "model_params.share_embedding must be False for multi_model (a shared embedding is a shared "
                f"parameter: the models would no longer be independent), got {params['share_embedding']!r}"
            )
        params["share_embedding"] = False
        self.model_params = params

    def __repr__(self) -> str:
        return f"MultiModel(model_params={self.model_params!r})"

    def model_choice(self, name: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        return MODEL, dict(self.model_params)

    def balancer_choice(self, name: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        return BALANCER, {}

    def training_splits(self, splits: Splits) -> Splits:
        note = (
            f"{splits.note}; family multi_model: one independent {MODEL} network per task "
            f"({', '.join(self.schema.task_names)}), {BALANCER} balancer; the configured model and balancer "
            f"are not used"
        )
        return Splits(splits.name, splits.train, splits.valid, splits.test, note)
