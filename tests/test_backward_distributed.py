"""Representation mode under a real two-process group (gloo, CPU): the Gram matrix is summed across processes
inside autograd's backward (the engine's hook on the gated mix), and each process's gradients equal the generic
path's under the same group."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

WORKER = textwrap.dedent(
    """
    import sys

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from mtlkit import Feature, Schema, Task
    from mtlkit.aggregation import create_aggregator
    from mtlkit.aggregation.base import GatedJacobian
    from mtlkit.backward import mtl_backward

    rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    schema = Schema(
        (Feature("u", "categorical", vocab_size=7, embedding_dim=3), Feature("x", "numeric"), Feature("z", "numeric")),
        (Task("click"), Task("buy"), Task("time", "regression")),
    )
    from mtlkit.models import create_model

    g = torch.Generator().manual_seed(100 + rank)  # each process its own batch
    cat = torch.randint(0, 7, (16, 1), generator=g)
    num = torch.randn(16, 2, generator=g)
    y = torch.rand(16, 3, generator=g).round()
    result = {}
    for path in ("hook", "generic"):
        torch.manual_seed(0)  # the same model on every process
        model = create_model("mmoe", schema)
        out_ = model.compute(cat, num)
        losses = torch.stack([F.mse_loss(out_.logits[t], y[:, k]) for k, t in enumerate(schema.task_names)])
        aggregator = create_aggregator("mgda", schema, mode="representation")
        seen = []
        weights = aggregator.weights
        aggregator.weights = lambda gram: (seen.append(gram.clone()), weights(gram))[1]
        if path == "hook":
            upstream = torch.autograd.grad(losses.sum(), out_.mix.inputs, retain_graph=True)[0]
            result["local"] = GatedJacobian(out_.mix.weights, upstream).gram()
        mtl_backward(losses, model, aggregator, shared=out_.shared, mix=out_.mix if path == "hook" else None)
        result[path] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        result[path + "_gram"] = seen[0]
    torch.save(result, out)
    dist.destroy_process_group()
    """
)


def test_two_processes_sum_their_gram_matrices_inside_the_backward(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    store = tmp_path / "store"
    outputs = [tmp_path / f"rank{r}.pt" for r in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), str(store), str(outputs[r])],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    for worker in workers:
        log, _ = worker.communicate(timeout=180)
        assert worker.returncode == 0, log.decode()
    results = [torch.load(path) for path in outputs]
    total = results[0]["local"] + results[1]["local"]
    assert not torch.allclose(results[0]["local"], results[1]["local"])  # the batches differ
    for result in results:
        for path in ("hook", "generic"):
            torch.testing.assert_close(result[path + "_gram"], total, rtol=1e-5, atol=1e-9)
        assert result["hook"].keys() == result["generic"].keys()
        for name, grad in result["hook"].items():
            torch.testing.assert_close(grad, result["generic"][name], atol=1e-6, rtol=1e-5, msg=name)
