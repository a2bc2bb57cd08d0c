"""SQLite results store: runs, per-epoch metrics and evaluations, one file (``advlab.db``).

Standard-library ``sqlite3`` only. Every write is one ``BEGIN IMMEDIATE`` transaction; the
database runs in WAL mode with a busy timeout, so several processes (e.g. a training run and an
evaluation, or the ranks of a job) can write to the same file at once. Dictionaries are stored
as JSON text after :func:`advlab._utils.json_safe` (tensors become lists, NaN/inf become
``null``), so a record read back equals the stored one up to that conversion.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from advlab._utils import atomic_write_json, json_safe

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    config TEXT NOT NULL,
    metadata TEXT NOT NULL,
    advlab_version TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_name TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    step INTEGER,
    metrics TEXT NOT NULL,
    advlab_version TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics (run_name, epoch, step);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_name TEXT,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    result TEXT NOT NULL,
    advlab_version TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS evaluations_run ON evaluations (run_name, kind);
"""


def default_runs_dir() -> Path:
    """Where runs, the store and reports live: ``$ADVLAB_RUNS``, else ``./runs``."""
    return Path(os.environ.get("ADVLAB_RUNS") or "runs").expanduser()


def default_store_path() -> Path:
    """The default store file: ``default_runs_dir() / "advlab.db"``."""
    return default_runs_dir() / "advlab.db"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _dumps(obj: Any) -> str:
    return json.dumps(json_safe(obj), sort_keys=True, allow_nan=False)


def _version() -> str:
    from advlab import __version__

    return __version__


class Store:
    """The results store. ``Store()`` opens (creating if needed) :func:`default_store_path`.

    Use as a context manager or call :meth:`close`. One ``Store`` per process (and thread);
    open a new one in each worker process rather than sharing a connection across ``fork``.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        if self.path.is_dir():
            raise ValueError(f"store path {str(self.path)!r} is a directory; give a file such as "
                             f"{str(self.path / 'advlab.db')!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self._transaction() as conn:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._version = _version()

    # -- connection handling -------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"the store {str(self.path)!r} is closed; open a new Store")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with ``BEGIN IMMEDIATE`` so that a concurrent writer
        waits on the busy timeout instead of failing on a lock upgrade."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- runs ----------------------------------------------------------------------------
    def add_run(self, name: str, path: str | Path, config: dict[str, Any],
                metadata: dict[str, Any] | None = None) -> int:
        """Insert or update (by ``name``) a run; returns its id (stable across updates)."""
        if not name:
            raise ValueError("a run needs a non-empty name")
        now = _now()
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO runs (name, path, config, metadata, advlab_version, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET path = excluded.path, "
                "config = excluded.config, metadata = excluded.metadata, "
                "advlab_version = excluded.advlab_version, updated = excluded.updated",
                (name, str(path), _dumps(config), _dumps(metadata or {}), self._version, now, now))
            row = conn.execute("SELECT id FROM runs WHERE name = ?", (name,)).fetchone()
        return int(row["id"])

    def get_run(self, name: str) -> dict[str, Any] | None:
        """The run called ``name`` as a dict, or ``None``."""
        row = self.conn.execute("SELECT * FROM runs WHERE name = ?", (name,)).fetchone()
        return _run_record(row) if row is not None else None

    def list_runs(self) -> list[dict[str, Any]]:
        """All runs, oldest first."""
        rows = self.conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
        return [_run_record(row) for row in rows]

    # -- metrics -------------------------------------------------------------------------
    def log_metrics(self, run_name: str, epoch: int, metrics: dict[str, float],
                    step: int | None = None) -> None:
        """Append one metrics record (e.g. one epoch of training) for ``run_name``."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO metrics (run_name, epoch, step, metrics, advlab_version, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (run_name, int(epoch), None if step is None else int(step), _dumps(metrics),
                 self._version, _now()))

    def get_metrics(self, run_name: str) -> list[dict[str, Any]]:
        """The metrics records of ``run_name`` in insertion order: dicts with keys
        ``id, run_name, epoch, step, metrics, advlab_version, created``."""
        rows = self.conn.execute(
            "SELECT * FROM metrics WHERE run_name = ? ORDER BY id", (run_name,)).fetchall()
        return [_record(row, "metrics") for row in rows]

    def clear_metrics(self, run_name: str, from_epoch: int | None = None) -> int:
        """Delete the metrics of ``run_name`` (all, or those of epochs ``>= from_epoch``: a
        fresh run reusing a name, or a resumed run redoing epochs); returns the count."""
        with self._transaction() as conn:
            cursor = conn.execute("DELETE FROM metrics WHERE run_name = ? AND epoch >= ?",
                                  (run_name, -(2**62) if from_epoch is None else int(from_epoch)))
        return cursor.rowcount

    # -- evaluations ---------------------------------------------------------------------
    def add_evaluation(self, run_name: str | None, kind: str, params: dict[str, Any],
                       result: dict[str, Any]) -> int:
        """Record one evaluation (``kind`` e.g. ``"evaluate"``, ``"attack"``, ``"geometry"``);
        ``run_name`` may be ``None`` for a model that is not a registered run. Returns its id."""
        if not kind:
            raise ValueError("an evaluation needs a kind, e.g. 'evaluate' or 'attack'")
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO evaluations (run_name, kind, params, result, advlab_version, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (run_name, kind, _dumps(params), _dumps(result), self._version, _now()))
        return int(cursor.lastrowid or 0)

    def get_evaluations(self, run_name: str | None = None,
                        kind: str | None = None) -> list[dict[str, Any]]:
        """Evaluations, oldest first, optionally filtered by run and/or kind."""
        clauses, args = [], []
        if run_name is not None:
            clauses.append("run_name = ?")
            args.append(run_name)
        if kind is not None:
            clauses.append("kind = ?")
            args.append(kind)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.conn.execute(f"SELECT * FROM evaluations{where} ORDER BY id", args).fetchall()
        return [_record(row, "params", "result") for row in rows]

    def get_evaluation(self, eval_id: int) -> dict[str, Any]:
        """The evaluation with id ``eval_id``; unknown ids are a ``KeyError``."""
        row = self.conn.execute("SELECT * FROM evaluations WHERE id = ?", (int(eval_id),)).fetchone()
        if row is None:
            raise KeyError(f"no evaluation with id {eval_id} in {str(self.path)!r}")
        return _record(row, "params", "result")

    # -- export --------------------------------------------------------------------------
    def export_json(self, path: str | Path | None = None) -> dict[str, Any]:
        """Every record of the store as one dict (``runs``, ``metrics``, ``evaluations``);
        also written atomically as JSON to ``path`` when given."""
        metrics = self.conn.execute("SELECT * FROM metrics ORDER BY id").fetchall()
        payload = {
            "store": str(self.path),
            "schema_version": SCHEMA_VERSION,
            "advlab_version": self._version,
            "exported": _now(),
            "runs": self.list_runs(),
            "metrics": [_record(row, "metrics") for row in metrics],
            "evaluations": self.get_evaluations(),
        }
        if path is not None:
            atomic_write_json(path, payload)
        return payload


def _record(row: sqlite3.Row, *json_columns: str) -> dict[str, Any]:
    record = dict(row)
    for column in json_columns:
        record[column] = json.loads(record[column])
    return record


def _run_record(row: sqlite3.Row) -> dict[str, Any]:
    return _record(row, "config", "metadata")
