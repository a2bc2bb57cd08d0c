"""Evaluation at scale: processes vs threads, resume after a kill, streaming memory, batch size.

Four measurements of ``advlab.evaluate`` in its batch-wise mode (``batches=True``) on the
Fashion-MNIST test points, each in fresh worker processes (this file with ``--worker``):

1. throughput: 2 processes x 1 thread (torchrun, gloo) against 1 x 1 and 1 x 2 threads, points
   per second of the evaluation itself (start-up excluded), and whether the 2-process
   ``robust_correct`` is bit-identical to the 1-process one (it must be);
2. resume: a run SIGKILLed once half of its points are committed, then ``resume=True``: total
   evaluation time against the uninterrupted 1 x 1 run, and identity of the result;
3. memory: peak resident memory of a worker streaming 10 000 against 1 000 points through a
   ``DataLoader`` (a Dataset that holds uint8 images and converts per item), minus the same
   worker's resident memory before the evaluation;
4. batch size: the points whose ``robust_correct`` differs between batch 64 and batch 500;
5. kernels: eager float32 NCHW against ``channels_last`` (the CPU default for max-pool models),
   ``amp="bf16"`` and ``compile`` (a warm call), time and the points whose ``robust_correct``
   differs.

    python benchmarks/evaluation_scale.py --model runs/fmnist --points 400 --preset fast
    python benchmarks/evaluation_scale.py --quick          # 128 points, memory 1 000 vs 2 000

``--model``: a saved advlab model directory (``advlab train --out``); without it a small_cnn is
trained for one epoch on 10 000 training images and cached under ``--cache-dir``. Never part of
the test suite; on a shared machine the timings are "busy machine" figures.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
IDX = Path("/usr/share/datasets/fashion-mnist")


def read_idx(split: str, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and int64 labels (N,) of Fashion-MNIST (IDX, gzip)."""
    prefix = "t10k" if split == "test" else "train"
    images = gzip.decompress((data_dir / f"{prefix}-images-idx3-ubyte.gz").read_bytes())
    labels = gzip.decompress((data_dir / f"{prefix}-labels-idx1-ubyte.gz").read_bytes())
    x = np.frombuffer(images, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    return x, np.frombuffer(labels, dtype=np.uint8, offset=8).astype(np.int64)


class LazyImages(torch.utils.data.Dataset):
    """uint8 images converted to float (1, 28, 28) in [0, 1] one item at a time."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.x[i].astype(np.float32) / 255.0).unsqueeze(0), int(self.y[i])


def model_dir(args: argparse.Namespace) -> Path:
    """The model to evaluate: ``--model`` or a cached one-epoch small_cnn."""
    if args.model:
        return Path(args.model)
    target = Path(args.cache_dir) / "fashion-mnist-small_cnn-1ep"
    if not (target / "model.safetensors").exists():
        from advlab.models import create_model, save_model
        from advlab.training import fit

        x, y = read_idx("train", Path(args.data_dir))
        xs = torch.from_numpy(x[:10000].astype(np.float32) / 255.0).unsqueeze(1)
        model = create_model("small_cnn", 10, (1, 28, 28), seed=0)
        result = fit(model, (xs, torch.from_numpy(y[:10000])), epochs=1, lr=2e-3, seed=0, progress=False)
        save_model(result.model, target)
    return target


# ----------------------------------------------------------------------------- worker processes
def worker(args: argparse.Namespace) -> None:
    """One evaluation; prints one ``RESULT {json}`` line on rank 0."""
    import torch.distributed as dist

    from advlab import ThreatModel, evaluate
    from advlab.models import load_model

    torch.set_num_threads(args.threads)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    model = load_model(args.model_path).eval()
    x, y = read_idx("test", Path(args.data_dir))
    data = torch.utils.data.DataLoader(LazyImages(x[:args.points], y[:args.points]), batch_size=100)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    done = [0]

    def progress(_name: str, points: int) -> None:
        done[0] += points
        if args.kill_at and done[0] >= args.kill_at * args.points:
            os.kill(os.getpid(), signal.SIGKILL)

    start = time.perf_counter()
    result = evaluate(model, data, ThreatModel("linf", args.eps), attacks=args.preset,
                      batch_size=args.batch_size, seed=0, sanity=False, progress=progress,
                      checkpoint=args.checkpoint, resume=args.resume)
    elapsed = time.perf_counter() - start
    if not dist.is_initialized() or dist.get_rank() == 0:
        record = {"time_s": elapsed, "n": result.n, "robust_correct": result.robust_correct.tolist(),
                  "robust_accuracy": result.robust_accuracy, "clean_accuracy": result.clean_accuracy,
                  "rss_before_kb": rss_before,
                  "rss_peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
        sys.stdout.write("RESULT " + json.dumps(record) + "\n")
        sys.stdout.flush()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    os._exit(0)


def launch(args: argparse.Namespace, *, procs: int = 1, threads: int = 1, points: int | None = None,
           batch_size: int | None = None, extra: tuple[str, ...] = ()) -> dict | None:
    """Run one worker (or a torchrun of ``procs`` workers); its RESULT record, None if killed."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    command = [str(Path(__file__).resolve()), "--worker", "--model-path", str(args.model_path), "--threads", str(threads),
               "--points", str(points or args.points), "--batch-size", str(batch_size or args.batch_size),
               "--preset", args.preset, "--eps", str(args.eps), "--data-dir", args.data_dir, *extra]
    if procs > 1:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = ["-m", "torch.distributed.run", f"--nproc_per_node={procs}",
                   "--master_addr=127.0.0.1", f"--master_port={port}", *command]
    done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        if done.returncode == -signal.SIGKILL:
            return None
        raise SystemExit(f"worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[0][len("RESULT "):])


# ------------------------------------------------------------------------------ measurements
def throughput(args: argparse.Namespace) -> dict:
    """1 x 1, 1 x 2 threads and 2 x 1 processes on the same points and batch size."""
    one = launch(args)
    two_threads = launch(args, threads=2)
    two_procs = launch(args, procs=2)
    speed = {k: r["n"] / r["time_s"] for k, r in (("1x1", one), ("1x2", two_threads), ("2x1", two_procs))}
    return {"points_per_s": speed, "ratio_2x1_vs_1x1": speed["2x1"] / speed["1x1"],
            "ratio_2x1_vs_1x2": speed["2x1"] / speed["1x2"],
            "identical_2x1_vs_1x1": two_procs["robust_correct"] == one["robust_correct"],
            "identical_1x2_vs_1x1": two_threads["robust_correct"] == one["robust_correct"],
            "robust_accuracy": one["robust_accuracy"], "clean_accuracy": one["clean_accuracy"],
            "reference": one}


def resume(args: argparse.Namespace, reference: dict) -> dict:
    """Kill at 50 % (SIGKILL in the progress callback), resume; wall times of whole worker
    processes (start-up included) against one uninterrupted worker."""
    sidecar = Path(args.cache_dir) / "resume-bench.partial"
    sidecar.unlink(missing_ok=True)
    start = time.perf_counter()
    killed = launch(args, extra=("--checkpoint", str(sidecar), "--kill-at", "0.5"))
    first_wall = time.perf_counter() - start
    assert killed is None, "the worker was not killed"
    committed = len(sidecar.read_text().splitlines()) - 1
    start = time.perf_counter()
    resumed = launch(args, extra=("--checkpoint", str(sidecar), "--resume"))
    second_wall = time.perf_counter() - start
    start = time.perf_counter()
    uninterrupted = launch(args)
    plain_wall = time.perf_counter() - start
    return {"batches_committed_at_kill": committed, "wall_killed_s": first_wall,
            "wall_resumed_s": second_wall, "wall_uninterrupted_s": plain_wall,
            "total_over_uninterrupted": (first_wall + second_wall) / plain_wall,
            "identical": resumed["robust_correct"] == reference["robust_correct"]
            == uninterrupted["robust_correct"]}


def memory(args: argparse.Namespace, small: int, large: int) -> dict:
    """Peak RSS growth during a streamed evaluation of ``small`` and ``large`` points."""
    rows = {}
    for n in (small, large):
        r = launch(args, points=n)
        rows[n] = {"rss_before_mb": r["rss_before_kb"] / 1024, "rss_peak_mb": r["rss_peak_kb"] / 1024,
                   "growth_mb": (r["rss_peak_kb"] - r["rss_before_kb"]) / 1024, "time_s": r["time_s"]}
    rows["peak_ratio"] = rows[large]["rss_peak_mb"] / rows[small]["rss_peak_mb"]
    return rows


def batch_sizes(args: argparse.Namespace, reference_64: dict | None = None) -> dict:
    """Points whose robust_correct differs between batch 64 and batch 500."""
    a = reference_64 or launch(args, batch_size=64)
    b = launch(args, batch_size=500)
    differ = sum(p != q for p, q in zip(a["robust_correct"], b["robust_correct"], strict=True))
    return {"n": a["n"], "differ": differ, "robust_64": a["robust_accuracy"], "robust_500": b["robust_accuracy"]}


def kernels(args: argparse.Namespace) -> dict:
    """Eager float32 against each opt-in kernel, in this process at 1 thread, on the same points:
    time and the points whose robust_correct differs (every example is verified in float32)."""
    from advlab import ThreatModel, evaluate
    from advlab.models import load_model

    torch.set_num_threads(1)
    model = load_model(args.model_path).eval()
    x, y = read_idx("test", Path(args.data_dir))
    xs = torch.from_numpy(x[:args.points].astype(np.float32) / 255.0).unsqueeze(1)
    ys = torch.from_numpy(y[:args.points])
    rows, base = {}, None
    nchw = {"channels_last": False}  # eager: the contiguous (NCHW) float32 model
    for name, options in [("eager", nchw), ("channels_last", {"channels_last": True}),
                          ("amp_bf16", {**nchw, "amp": "bf16"}), ("compile", {**nchw, "compile": True})]:
        if name == "compile":  # the first call compiles: time a second, warm call
            evaluate(model, xs[:args.batch_size], ys[:args.batch_size], ThreatModel("linf", args.eps),
                     attacks=args.preset, batch_size=args.batch_size, sanity=False, **options)
        start = time.perf_counter()
        r = evaluate(model, xs, ys, ThreatModel("linf", args.eps), attacks=args.preset,
                     batch_size=args.batch_size, sanity=False, batches=True, **options)
        spent = time.perf_counter() - start
        base = base or (spent, r)
        rows[name] = {"time_s": spent, "ratio": spent / base[0], "robust_accuracy": r.robust_accuracy,
                      "differ": int((r.robust_correct != base[1].robust_correct).sum()),
                      "clean_identical": bool(torch.equal(r.clean_correct, base[1].clean_correct))}
    return rows


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a saved advlab model directory")
    parser.add_argument("--points", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--memory-points", type=int, nargs=2, default=[1000, 10000])
    parser.add_argument("--only", default="throughput,resume,memory,batch,kernels",
                        help="comma-separated subset of throughput,resume,memory,batch,kernels")
    parser.add_argument("--quick", action="store_true", help="128 points, memory 1 000 vs 2 000")
    parser.add_argument("--data-dir", default=str(IDX))
    parser.add_argument("--cache-dir", default="runs/benchmarks/evaluation_scale")
    parser.add_argument("--json", default=None, help="write the figures here")
    # worker mode
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kill-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.points, args.memory_points = 128, [1000, 2000]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        return worker(args)
    Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    args.model_path = model_dir(args)
    only = set(args.only.split(","))
    figures: dict = {"points": args.points, "batch_size": args.batch_size, "preset": args.preset,
                     "eps": args.eps, "cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    reference = None
    if "throughput" in only:
        figures["throughput"] = throughput(args)
        reference = figures["throughput"].pop("reference")
        print("throughput (points/s):", json.dumps(figures["throughput"], indent=1), flush=True)
    if "resume" in only:
        figures["resume"] = resume(args, reference or launch(args))
        r = figures["resume"]
        print("resume:", json.dumps(r, indent=1), flush=True)
    if "memory" in only:
        figures["memory"] = memory(args, *args.memory_points)
        print("memory:", json.dumps(figures["memory"], indent=1), flush=True)
    if "kernels" in only:
        figures["kernels"] = kernels(args)
        print("kernels:", json.dumps(figures["kernels"], indent=1), flush=True)
    if "batch" in only:
        figures["batch"] = batch_sizes(args, reference if args.batch_size == 64 else None)
        print("batch 64 vs 500:", json.dumps(figures["batch"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
