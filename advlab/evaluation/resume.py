"""Resumable evaluation: per-batch results committed to a JSON-lines sidecar as they finish.

The first line is the header: the fingerprint of everything that decides the result (model
parameters, threat, eps, preset, seed, batch size, number of points, kernels). Each further line
is one finished global batch, with the fingerprint of its points. ``resume=True`` reloads the
finished batches after the header and every re-read batch's points have been checked against the
file; anything changed is refused. A line is appended, flushed and fsynced before the next batch
starts, so a SIGKILL loses at most the batches in flight, and a torn last line is ignored.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)
FORMAT = "advlab-evaluation-checkpoint-1"


class CheckpointMismatch(ValueError):
    """The checkpoint was written for another model, data, threat or preset."""


class CheckpointExists(ValueError):
    """A checkpoint is there but ``resume`` was not asked for."""


class Checkpoint:
    """A sidecar file of finished batches (``path``), written by rank 0 only."""

    def __init__(self, path: str | Path, header: dict[str, Any], *, resume: bool) -> None:
        self.path = Path(path)
        self.header = {"format": FORMAT, **header}
        self.done: dict[int, dict[str, Any]] = {}
        if self.path.exists() and not resume:
            raise CheckpointExists(
                f"an evaluation checkpoint exists at {self.path}: pass resume=True (--resume) to "
                "continue it, or delete the file to start over")
        if resume and self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_lines([self.header], mode="w")

    def _load(self) -> None:
        lines = self.path.read_text().splitlines()
        records = []
        for number, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines) - 1:  # torn by a kill during the write: redo that batch
                    logger.info("ignoring the torn last line of %s", self.path)
                    break
                raise ValueError(f"{self.path} line {number + 1} is not JSON: delete the file") from None
        if not records or records[0].get("format") != FORMAT:
            raise ValueError(f"{self.path} is not an advlab evaluation checkpoint: delete it or pass another path")
        changed = {k: (records[0].get(k), v) for k, v in self.header.items() if records[0].get(k) != v}
        if changed:
            detail = "; ".join(f"{k}: checkpoint {old!r}, now {new!r}" for k, (old, new) in changed.items())
            hint = (" or pass the checkpoint's kernel options (for a checkpoint written before "
                    "channels_last became the CPU default: --no-channels-last, channels_last=False)"
                    if "kernels" in changed else "")
            raise CheckpointMismatch(f"cannot resume {self.path}: it was written for other inputs "
                                     f"({detail}); delete it to start over{hint}")
        self.done = {r["batch"]: r for r in records[1:]}
        text = "\n".join(json.dumps(r) for r in records) + "\n"
        self.path.write_text(text)  # drop a torn line before appending
        logger.info("resuming %s: %d batches done", self.path, len(self.done))

    def check_data(self, index: int, data_id: str) -> None:
        """Refuse a finished batch whose points changed since it was written."""
        record = self.done.get(index)
        if record is not None and record["data_id"] != data_id:
            raise CheckpointMismatch(f"cannot resume {self.path}: the points of batch {index} "
                                     "changed (other data or order); delete it to start over")

    def append(self, records: list[dict[str, Any]]) -> None:
        """Commit finished batches (flushed and fsynced)."""
        for record in records:
            self.done[record["batch"]] = record
        self._write_lines(records, mode="a")

    def _write_lines(self, records: list[dict[str, Any]], mode: str) -> None:
        with open(self.path, mode) as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in records))
            fh.flush()
            os.fsync(fh.fileno())

    def remove(self) -> None:
        """Delete the sidecar once the final result is written."""
        self.path.unlink(missing_ok=True)
