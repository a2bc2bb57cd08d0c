"""Model EMA (Polyak averaging of the weights) as a callback of the fit loop.

Polyak & Juditsky (1992), "Acceleration of stochastic approximation by averaging", in the
exponential form used for deep networks: after every optimiser step ``t``

    ema <- d_t * ema + (1 - d_t) * weights,   d_t = min(decay, (1 + t) / (10 + t))

(the warm-up ``(1 + t) / (10 + t)`` of TensorFlow's ``ExponentialMovingAverage`` with
``num_updates``: early averages do not remember the random initialisation). Every floating-point
entry of the state dict is averaged (parameters and BatchNorm running statistics, as timm's
``ModelEmaV2``); integer buffers (``num_batches_tracked``) are copied. Weight averaging is one of
the remedies for robust overfitting studied by Rice, Wong & Kolter (2020) and part of the
strongest robust-training recipes (Gowal et al. 2020, "Uncovering the limits of adversarial
training against norm-bounded adversarial examples", decay 0.995 per step).

With ``fit(..., ema_decay=0.999)`` the averaged copy is *the run's model*: it is validated, its
epoch-end hook (adversarial validation) runs on it, ``model.safetensors`` / ``last.safetensors``
hold it and :class:`~advlab.training.FitResult` returns it; training continues on the raw
weights, which the checkpoint keeps under ``"model"`` next to the average (``"ema"``), so a
resumed run -- or a rollback after catastrophic overfitting -- continues the average exactly.
Under torchrun every rank averages its own (identical) replica.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from advlab.training.callbacks import LoopCallback, Trainer

#: The warm-up constant: ``d_t = min(decay, (1 + t) / (WARMUP + t))``.
WARMUP = 10.0


def ema_decay_at(decay: float, updates: int, *, warmup: bool = True) -> float:
    """The decay of the ``updates``-th update (0-based): ``min(decay, (1 + t) / (10 + t))``."""
    if not warmup:
        return decay
    return min(decay, (1.0 + updates) / (WARMUP + updates))


def check_ema_decay(decay: Any) -> float:
    """``decay`` as a float in (0, 1), or a ValueError saying what to pass."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be a number in (0, 1) such as 0.999 (or None for no "
                         f"weight averaging), got {decay!r}")
    return float(decay)


class ModelEMA(LoopCallback):
    """An exponential moving average of ``model``'s weights, updated after every optimiser step.

    Args:
        model: the (unwrapped) training model; the average starts as a copy of it.
        decay: the decay per step, e.g. 0.999 (an average over about 1000 steps).
        warmup: use the warm-up decay ``min(decay, (1 + t) / (10 + t))``.
    """

    def __init__(self, model: nn.Module, *, decay: float = 0.999, warmup: bool = True) -> None:
        self.source = model
        self.decay = check_ema_decay(decay)
        self.warmup = bool(warmup)
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.updates = 0

    def settings(self) -> dict[str, Any]:
        """The run-config entry (compared on resume)."""
        return {"decay": self.decay, "warmup": self.warmup}

    @torch.no_grad()
    def update(self) -> None:
        """One averaging step towards the source model's current weights."""
        d = ema_decay_at(self.decay, self.updates, warmup=self.warmup)
        source = self.source.state_dict()
        for key, value in self.model.state_dict().items():
            new = source[key].detach()
            if value.dtype.is_floating_point:
                value.mul_(d).add_(new.to(value.dtype), alpha=1.0 - d)
            else:
                value.copy_(new)
        self.updates += 1

    # -- the loop's hooks ----------------------------------------------------------------
    def on_step_end(self, trainer: Trainer) -> None:
        self.update()

    def evaluation_model(self) -> nn.Module:
        return self.model

    def checkpoint_entries(self, *, mid_epoch: bool) -> dict[str, Any]:
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        return {"ema": {"state": state, "updates": self.updates, **self.settings()}}

    def on_restore(self, trainer: Trainer, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("ema")
        if saved is None:
            raise ValueError("the checkpoint holds no EMA state (it was written without "
                             "ema_decay); resume it without ema_decay, or start a new run")
        self.model.load_state_dict(saved["state"])
        self.updates = int(saved["updates"])
