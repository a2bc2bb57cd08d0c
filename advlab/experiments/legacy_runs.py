"""Runs written by advlab 0.1: their :func:`~advlab.experiments.runs.train_run` arguments, read
back from what they stored.

A 0.1 run directory holds ``config.json`` and ``checkpoint.pt`` (whose ``config`` entry is the
same dict) but no ``train_args``. Its config has the dataset, the model name and
``model_spec``, the objective (``{"name", "params", "settings"}``), fit's settings (``epochs``,
``lr``, ``batch_size``, ``optimizer``, ``schedule``, ``weight_decay``, ``seed``, ...), the
validation split (``val_fraction``, ``n_train``), the adversarial validation (``adv_val``:
``{"norm", "eps", "n", "preset"}`` or None), ``init`` (``{"run", "epoch"}``) and
``early_stopping_patience``. That is every argument of a 0.1 ``advlab train``; the store name
(not recorded) defaults to the directory's name as it did then.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LEGACY_OPTIONS", "legacy_arguments"]

#: train_run argument -> the ``advlab train`` option that sets it (named when not recorded)
LEGACY_OPTIONS = {
    "dataset": "--dataset", "model": "--model", "defense": "--defense",
    "defense_params": "--eps/--steps/... (the defense's parameters)", "epochs": "--epochs",
    "lr": "--lr", "batch_size": "--batch-size", "optimizer": "--optimizer",
    "schedule": "--schedule", "weight_decay": "--weight-decay", "seed": "--seed",
    "val_fraction": "--val-fraction",
}
_SAME_NAME = ("dataset", "epochs", "lr", "batch_size", "optimizer", "schedule", "weight_decay",
              "seed", "val_fraction", "n_train", "data_dir", "device", "checkpoint_every",
              "progress")


def legacy_arguments(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The train_run arguments a 0.1 ``config`` records, and the required ones it lacks."""
    arguments = {key: config[key] for key in _SAME_NAME if key in config}
    spec = config.get("model_spec") if isinstance(config.get("model_spec"), dict) else {}
    if config.get("model") or spec.get("name"):
        arguments["model"] = config.get("model") or spec["name"]
    if spec.get("kwargs"):
        arguments["model_options"] = dict(spec["kwargs"])
    objective = config.get("objective")
    if isinstance(objective, dict) and "name" in objective:
        arguments["defense"] = objective["name"]
        arguments["defense_params"] = dict(objective.get("params") or {})
    elif "defense" in config:
        arguments["defense"] = config["defense"]
    if arguments.get("defense") == "none":
        arguments.setdefault("defense_params", {})
    validation = config.get("adv_val")
    if isinstance(validation, dict):
        arguments.update(adv_val=True, adv_val_eps=validation.get("eps"),
                         adv_val_n=validation.get("n", 500))
    elif "adv_val" in config or "objective" in config:
        arguments["adv_val"] = False  # recorded as off (None), or older than the option
    init = config.get("init")
    arguments["init"] = init.get("run") if isinstance(init, dict) else None
    arguments["patience"] = config.get("early_stopping_patience")
    ema = config.get("ema")
    arguments["ema_decay"] = ema.get("decay") if isinstance(ema, dict) else None
    missing = [key for key in LEGACY_OPTIONS if key not in arguments]
    return arguments, missing
