"""The SQLite results store: schema, round trips, export, concurrent writers."""

from __future__ import annotations

import json
import math
import multiprocessing
import sqlite3

import pytest
import torch

import advlab
from advlab.store import Store, default_runs_dir, default_store_path

CONFIG = {"dataset": "digits", "lr": 0.001, "layers": [8, 16], "nested": {"a": None, "b": True}}


def test_schema_and_wal(tmp_path):
    path = tmp_path / "sub" / "advlab.db"
    with Store(path) as store:
        assert path.exists()
        assert store.list_runs() == []
    conn = sqlite3.connect(path)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "metrics", "evaluations"} <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    Store(path).close()  # reopening an existing store keeps working


def test_default_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLAB_RUNS", str(tmp_path / "elsewhere"))
    assert default_runs_dir() == tmp_path / "elsewhere"
    assert default_store_path() == tmp_path / "elsewhere" / "advlab.db"
    monkeypatch.delenv("ADVLAB_RUNS")
    assert default_store_path().as_posix() == "runs/advlab.db"


def test_run_round_trip_and_upsert(tmp_path):
    with Store(tmp_path / "s.db") as store:
        run_id = store.add_run("exp", tmp_path / "exp", CONFIG, {"note": "first"})
        run = store.get_run("exp")
        assert run["id"] == run_id
        assert run["config"] == CONFIG and run["metadata"] == {"note": "first"}
        assert run["path"] == str(tmp_path / "exp")
        assert run["advlab_version"] == advlab.__version__
        assert run["created"] == run["updated"]
        # upsert by name: same id, new content, created kept
        assert store.add_run("exp", "other", {"x": 1}, {"note": "second"}) == run_id
        updated = store.get_run("exp")
        assert updated["config"] == {"x": 1} and updated["metadata"] == {"note": "second"}
        assert updated["created"] == run["created"] and updated["updated"] >= run["updated"]
        store.add_run("exp2", "p2", {})
        assert [r["name"] for r in store.list_runs()] == ["exp", "exp2"]
        assert store.get_run("missing") is None


def test_metrics_round_trip(tmp_path):
    with Store(tmp_path / "s.db") as store:
        records = [{"train_loss": 1.0 / (e + 1), "val_acc": 0.5 + e / 10} for e in range(3)]
        for epoch, record in enumerate(records, start=1):
            store.log_metrics("exp", epoch, record)
        store.log_metrics("exp", 3, {"loss": 0.1}, step=7)
        store.log_metrics("other", 1, {"loss": 9.0})
        got = store.get_metrics("exp")
        assert [m["metrics"] for m in got] == [*records, {"loss": 0.1}]
        assert [m["epoch"] for m in got] == [1, 2, 3, 3]
        assert [m["step"] for m in got] == [None, None, None, 7]
        assert store.clear_metrics("exp", from_epoch=3) == 2
        assert [m["epoch"] for m in store.get_metrics("exp")] == [1, 2]
        assert store.clear_metrics("exp") == 2
        assert store.get_metrics("exp") == [] and len(store.get_metrics("other")) == 1


def test_evaluations_round_trip_and_json_safety(tmp_path):
    with Store(tmp_path / "s.db") as store:
        params = {"norm": "linf", "eps": [0.1, 0.2], "attacks": ("apgd-ce", "square")}
        result = {"clean_accuracy": 0.9, "robust": torch.tensor([0.5, 0.25]), "bad": math.nan}
        eval_id = store.add_evaluation("exp", "evaluate", params, result)
        store.add_evaluation(None, "attack", {"attack": "fgsm"}, {"success_rate": 1.0})
        record = store.get_evaluation(eval_id)
        assert record["kind"] == "evaluate" and record["run_name"] == "exp"
        assert record["params"] == {"norm": "linf", "eps": [0.1, 0.2], "attacks": ["apgd-ce", "square"]}
        assert record["result"] == {"clean_accuracy": 0.9, "robust": [0.5, 0.25], "bad": None}
        assert record["advlab_version"] == advlab.__version__
        assert [e["kind"] for e in store.get_evaluations()] == ["evaluate", "attack"]
        assert [e["id"] for e in store.get_evaluations(run_name="exp")] == [eval_id]
        assert [e["kind"] for e in store.get_evaluations(kind="attack")] == ["attack"]
        assert store.get_evaluations(run_name="exp", kind="attack") == []
        with pytest.raises(KeyError, match="no evaluation with id 999"):
            store.get_evaluation(999)
        with pytest.raises(ValueError, match="needs a kind"):
            store.add_evaluation("exp", "", {}, {})


def test_export_json(tmp_path):
    with Store(tmp_path / "s.db") as store:
        store.add_run("exp", "runs/exp", CONFIG)
        store.log_metrics("exp", 1, {"val_acc": 0.75})
        store.add_evaluation("exp", "geometry", {"k": 3}, {"curvature": [1.0, 2.0]})
        out = tmp_path / "export" / "store.json"
        payload = store.export_json(out)
        on_disk = json.loads(out.read_text())
    assert on_disk == payload
    assert [r["name"] for r in payload["runs"]] == ["exp"]
    assert payload["runs"][0]["config"] == CONFIG
    assert payload["metrics"][0]["metrics"] == {"val_acc": 0.75}
    assert payload["evaluations"][0]["result"] == {"curvature": [1.0, 2.0]}
    assert [p.name for p in out.parent.iterdir()] == ["store.json"]  # no temp file left


def test_closed_store_and_bad_path(tmp_path):
    store = Store(tmp_path / "s.db")
    store.close()
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.list_runs()
    with pytest.raises(ValueError, match="is a directory"):
        Store(tmp_path)


def _writer(path: str, worker: int, count: int, start) -> None:
    start.wait()
    with Store(path) as store:
        store.add_run(f"run-{worker}", f"runs/{worker}", {"worker": worker})
        for i in range(count):
            if i % 2:
                store.log_metrics(f"run-{worker}", i, {"i": i, "worker": worker})
            else:
                store.add_evaluation(f"run-{worker}", "attack", {"i": i}, {"worker": worker})


def test_two_processes_write_concurrently(tmp_path):
    path = str(tmp_path / "shared.db")
    Store(path).close()
    context = multiprocessing.get_context("fork")
    start = context.Event()
    workers = [context.Process(target=_writer, args=(path, w, 200, start)) for w in range(2)]
    for process in workers:
        process.start()
    start.set()
    for process in workers:
        process.join(timeout=60)
        assert process.exitcode == 0
    with Store(path) as store:
        assert len(store.list_runs()) == 2
        for worker in range(2):
            metrics = store.get_metrics(f"run-{worker}")
            evaluations = store.get_evaluations(run_name=f"run-{worker}")
            assert [m["metrics"]["i"] for m in metrics] == list(range(1, 200, 2))
            assert [e["params"]["i"] for e in evaluations] == list(range(0, 200, 2))
        assert len(store.export_json()["metrics"]) + len(store.get_evaluations()) == 400
