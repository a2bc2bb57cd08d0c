"""Checkpoints of :func:`advlab.training.fit`: atomic writes, safe loads, resume checks.

``run_dir/checkpoint.pt`` holds plain containers and tensors only (so it loads with
``torch.load(..., weights_only=True)``): the model, optimiser and scheduler states, the RNG
states of every rank (torch CPU and CUDA, as tensors), the number of finished epochs and of
optimiser steps done in the current epoch, the partial sums of that epoch, the history, the best
metric and the run config. It is written atomically (temporary file in the same directory,
fsync, ``os.replace``), so a kill at any moment leaves the previous or the new checkpoint.

Resuming compares the checkpoint's config with the current one, key by key, except for
:data:`RESUME_IGNORED_KEYS` (settings that do not change what is computed). ``epochs`` may
change only with ``schedule="constant"``: the ``onecycle`` and ``cosine`` schedules are laid out
over ``epochs``, so a longer run would not be the continuation of the shorter one. A checkpoint
of advlab 0.1 is compared on the keys it has (the keys added since, such as ``train_args`` and
``test_split``, describe the same run).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from advlab._utils import atomic_write, json_safe

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1

#: Config keys that may differ between a checkpoint and the run resuming it.
RESUME_IGNORED_KEYS = frozenset({
    "progress", "device", "num_workers", "checkpoint_every", "world_size", "advlab_version",
    "torch_version", "early_stopping_patience", "data_dir", "run_name", "run_dir",
})


def normalise_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as it reads back from JSON (tuples become lists, NaN becomes None)."""
    return json.loads(json.dumps(json_safe(config), sort_keys=True))


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two run configs, minus the ignored ones."""
    saved, current = normalise_config(saved), normalise_config(current)
    ignored = set(RESUME_IGNORED_KEYS)
    if current.get("schedule") == "constant" and saved.get("schedule") == "constant":
        ignored.add("epochs")
    keys = (saved.keys() | current.keys()) - ignored
    if str(saved.get("advlab_version", "")).startswith("0.1"):  # keys added since 0.1
        keys &= saved.keys()
    return sorted(k for k in keys if saved.get(k, "<missing>") != current.get(k, "<missing>"))


def check_resumable(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Raise a ValueError naming the differing keys when ``current`` cannot resume ``saved``."""
    differences = config_differences(saved, current)
    if not differences:
        return
    details = "; ".join(f"{k}: checkpoint {saved.get(k)!r} != now {current.get(k)!r}"
                        for k in differences)
    hint = (" (epochs may only change with schedule='constant')" if "epochs" in differences
            else "")
    raise ValueError(f"cannot resume {str(path)!r}: the config differs in {', '.join(differences)}"
                     f"{hint} -- {details}. Use the same settings, or start a new run "
                     "(another run_dir, or resume=False to overwrite)")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically with ``torch.save``."""
    atomic_write(path, lambda handle: torch.save(state, handle))


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, pickled objects, or not advlab's."""


def _why_unreadable(path: Path, err: BaseException) -> str:
    head = path.read_bytes()[:4] if path.exists() else b""
    text = str(err)
    if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
        return "it holds pickled Python objects, which advlab never unpickles"
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return f"truncated or corrupt: {type(err).__name__}"
    return f"not a torch.save file at all ({path.stat().st_size if path.exists() else 0} bytes)"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code) on the CPU.

    Raises :class:`CheckpointError` -- ``"checkpoint.pt is not an advlab checkpoint (...)"``
    saying why (pickled objects, truncated, foreign) and what to do -- instead of torch's error.
    """
    path = Path(path)
    advice = ("; delete it to start the run over (--force), or restore it from a backup")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # UnpicklingError, RuntimeError, EOFError, zipfile errors, ...
        raise CheckpointError(f"{path} is not an advlab checkpoint ({_why_unreadable(path, err)})"
                              f"{advice}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = f"format {state.get('format')!r}" if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not an advlab checkpoint (it holds {found}, expected a "
                              f"training checkpoint of format {CHECKPOINT_FORMAT}){advice}")
    return state


def capture_rng(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's torch RNG states (CPU, and ``device``'s when it is CUDA) as tensors."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng(states: dict[str, torch.Tensor], device: torch.device) -> None:
    """Set the RNG states saved by :func:`capture_rng` (inside fit's forked RNG scope)."""
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)

