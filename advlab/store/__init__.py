"""SQLite results store (runs, per-epoch metrics, evaluations); see :class:`Store`."""

from advlab.store.sqlite import Store, default_runs_dir, default_store_path

__all__ = ["Store", "default_runs_dir", "default_store_path"]
