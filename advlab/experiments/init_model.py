"""The model a training run fine-tunes (``train_run(init=...)``, ``advlab train --init``): any
MODEL form of :func:`advlab.models.load_any_model`, with the recipe that lets the run save it
(:mod:`advlab.models.recipe`), and what the run's config records of it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from advlab._utils import json_safe

logger = logging.getLogger(__name__)

__all__ = ["init_model", "init_record"]


def init_model(init: str | Path, options: dict[str, Any] | None = None) -> nn.Module:
    """The model to fine-tune: ``init`` in any MODEL form, with a recipe ``save_model`` can write."""
    from advlab.models import load_any_model
    from advlab.models.recipe import recipe_of

    opts = dict(options or {})
    unknown = set(opts) - {"weights", "model_args", "mean", "std", "imports"}
    if unknown:
        raise ValueError(f"init_options: unknown keys {sorted(unknown)} (weights, model_args, "
                         "mean, std, imports)")
    net = load_any_model(str(init), weights=opts.get("weights"), model_args=opts.get("model_args"),
                         mean=opts.get("mean"), std=opts.get("std"),
                         imports=opts.get("imports") or ())
    recipe = recipe_of(net)
    if recipe is None:  # a model with neither a registry spec nor a recipe cannot be saved
        raise ValueError(f"init {init}: advlab cannot save this model after training; give it "
                         "as a factory file.py:Name with --weights")
    kind = recipe.get("program_kind")
    if kind is not None:
        logger.warning("init %s is a %s: it trains as it was %s (dropout and batch-norm keep "
                       "the mode they had then); for a model whose mode switches, give its code "
                       "as a factory file.py:Name with --weights", init,
                       "TorchScript program" if kind == "torchscript" else "torch.export program",
                       "traced" if kind == "torchscript" else "exported")
    return net


def init_record(init: str | Path, net: nn.Module) -> dict[str, Any]:
    """What the config records of the model a run fine-tunes."""
    from advlab.models.recipe import recipe_of

    source = dict(getattr(net, "advlab_source", {}) or {})
    if source.get("kind") == "advlab" and "normalize" not in source:  # as fit(init=) records it
        metadata = getattr(net, "advlab_metadata", {}) or {}
        logger.info("fine-tuning from %s (epoch %s)", init, metadata.get("epoch"))
        return {"run": str(Path(init).resolve()), "epoch": metadata.get("epoch")}
    logger.info("fine-tuning from %s (%s)", init, source.get("kind"))
    return json_safe({"model": str(init), "kind": source.get("kind"), "recipe": recipe_of(net),
                      "weights": source.get("weights")})
