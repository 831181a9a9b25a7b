"""The GPU check in one call: everything a first CUDA machine should run, within a time
budget, with every result in one output folder that can be copied back.

    benchmarks/gpu_check.sh OUT_DIR BUDGET_MINUTES [--data-root DIR]       # on a CUDA machine
    benchmarks/gpu_check.sh OUT_DIR 10 --dry-run                            # anywhere: tiny sizes, CPU

Steps, in order (each with a share of the budget; a step that would not fit is skipped
and said so; the published study gets whatever is left):

 1. ``env``: the machine (``nvidia-smi``, torch, CUDA, cuDNN, the CPU's bfloat16).
 2. ``tests``: the tests that need or concern CUDA (``tests/hardware/test_cuda_paths.py``,
    ``tests/hardware/test_precision.py``, ``tests/snn/test_neurons.py``, ``tests/hardware/test_hardware.py``).
 3. ``train_step``: ``benchmarks/train_step.py`` on the device for 32, TF32 and bf16-mixed
    (and 16-mixed); ``train_step_compiled``: the same with ``--lif-scan compiled``.
 4. ``preset_times``: ``benchmarks/preset_times.py --hardware cuda``.
 5. ``sync_audit``: one training step of the real trainer under
    ``torch.cuda.set_sync_debug_mode("warn")``: every host sync, with where it comes from.
 6. ``repeatable``: two identical short runs, compared bit for bit (every metric series).
 7. ``cpu_vs_device``: one training step on the CPU and on the device from the same
    weights and batch: loss, spikes, gradients compared.
 8. ``resume``: a run stopped mid-epoch and resumed on the device, against an
    uninterrupted one (every metric series, bit for bit).
 9. ``published``: ``python run.py study=published seed=43,44`` while time remains;
    stopped at the budget's end with a checkpoint, so the same command continues it.

The output folder holds ``summary.md`` (each step's status and time), ``logs/`` (each
step's output), ``tables/`` (each check's results as Markdown/JSON), ``mlflow.db`` and
``mlruns/`` (every run's MLflow record), ``checkpoints/`` and Hydra's ``multirun/``. The
data set must already be on the machine (``--data-root``; a GPU machine may have no
internet): ``python -m g2g.data fashionmnist --root data`` beforehand, or copy ``data/``.

``--dry-run`` runs every step on the CPU at tiny sizes (the test suite does, so the
script works the first time a GPU is there): the tests step runs only
``tests/hardware/test_cuda_paths.py``, the sync audit has nothing to audit (CUDA only) and says so,
and the CPU-vs-device step compares the CPU with itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO_ROOT / "benchmarks"
#: the tiny sizes of a dry run (as the test suite's)
TINY = ["model.hidden_dim=16", "encoder.num_steps=4", "train.batch_size=16", "train.eval_batch_size=16"]
#: the short runs of the repeatability and resume checks on a GPU
SHORT = ["experiment=quick", "dataset.train_subset=10240", "dataset.test_subset=2000"]
#: the network of the checks: DST on a G2G mixer (its updates, Adam restarts and ties included)
DST_OVERRIDES = ["model=mixer", "sparsity=dynamic", "sparsity.update_interval=3"]
#: metrics whose values are wall-clock times
WALL_CLOCK = {"epoch_time_s", "evaluation_time_s"}
#: each step's share of the budget (the published study: what is left)
SHARES = {"env": 0.01, "tests": 0.15, "train_step": 0.12, "train_step_compiled": 0.08, "preset_times": 0.08,
          "sync_audit": 0.03,
          "repeatable": 0.08, "cpu_vs_device": 0.03, "resume": 0.08}


# ----------------------------------------------------------------- the checks (in-process)

def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _run_overrides(args, folder: str, extra: list[str] = ()) -> list[str]:
    out = Path(args.out)
    sizes = [*TINY, "train.epochs=2"] if args.dry_run else [*SHORT, "train.epochs=2"]
    return [*sizes, f"hardware={args.hardware}", f"dataset.root={args.data_root}", "dataset.download=false",
            f"checkpoint.dir={out / 'checkpoints' / args.stamp / folder}",
            f"tracking.uri=sqlite:///{out / 'mlflow.db'}",
            f"tracking.experiment=gpu_check_{folder}", "train.progress=false", *extra]


def _histories(run_id: str, uri: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    histories = {}
    for key in client.get_run(run_id).data.metrics:
        entries = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        histories[key] = [(m.step, None if key in WALL_CLOCK else m.value) for m in entries]
    return histories


def _compare(first: dict, second: dict) -> list[str]:
    """The metric series that differ (``key: first difference``), empty when all agree."""
    differing = [f"{key}: only in one run" for key in sorted(set(first) ^ set(second))]
    for key in sorted(set(first) & set(second)):
        if first[key] != second[key]:
            step = next((a, b) for a, b in zip(first[key], second[key]) if a != b) if len(first[key]) == len(
                second[key]) else ("length", len(first[key]), len(second[key]))
            differing.append(f"{key}: {step}")
    return differing


def check_repeatable(args) -> dict:
    """Two identical runs (own folders and experiments), every metric series compared."""
    from g2g.run.job import run_job

    summaries = [run_job(_compose(_run_overrides(args, f"repeatable_{n}", DST_OVERRIDES))) for n in (1, 2)]
    differing = _compare(*(_histories(s["run_id"], s["tracking_uri"]) for s in summaries))
    return {"passed": not differing, "differing": differing, "runs": [s["run_id"] for s in summaries]}


def check_resume(args) -> dict:
    """A DST run stopped after its 5th optimizer step (as on SIGTERM: checkpoint, stop) and
    resumed, against an uninterrupted one."""
    from g2g.lifecycle.signals import TrainingInterrupted
    from g2g.run.job import run_job
    from g2g.training.trainer import Trainer

    whole = run_job(_compose(_run_overrides(args, "resume_whole", DST_OVERRIDES)))
    real = Trainer.check_finite

    def stop_after_step_5(self, *a, **k):
        if self.global_step == 4 and a:  # during the 5th step: SIGTERM, so it stops after it
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, *a, **k)

    Trainer.check_finite = stop_after_step_5
    try:
        run_job(_compose(_run_overrides(args, "resume_stopped", DST_OVERRIDES)))
        stopped = False
    except TrainingInterrupted:
        stopped = True
    finally:
        Trainer.check_finite = real
    resumed = run_job(_compose(_run_overrides(args, "resume_stopped", DST_OVERRIDES)))
    differing = _compare(_histories(whole["run_id"], whole["tracking_uri"]),
                         _histories(resumed["run_id"], resumed["tracking_uri"]))
    return {"passed": stopped and not differing, "stopped_mid_run": stopped, "differing": differing}


def _objects(args, device):
    import torch

    from g2g.build.objects import build, load_data
    from g2g.build.random_streams import seed_everything
    from g2g.hardware.precision import set_tf32

    cfg = _compose(_run_overrides(args, "audit", DST_OVERRIDES))
    torch.use_deterministic_algorithms(True)
    set_tf32(False)
    seed_everything(cfg.seed)
    data = load_data(cfg, device)
    return cfg, data, build(cfg, data, device)


def check_sync_audit(args) -> dict:
    """One step of the real trainer with CUDA's sync debug mode on: every host sync."""
    import warnings

    import torch

    device = torch.device("cuda" if not args.dry_run else "cpu")
    cfg, data, objects = _objects(args, device)
    batch = cfg.train.batch_size
    x, y = data.train_x[:2 * batch], data.train_y[:2 * batch]
    objects.trainer.train_epoch(x, y)  # warm-up (allocations, cuBLAS handles)
    if device.type != "cuda":
        return {"passed": True, "note": "no CUDA device: torch.cuda.set_sync_debug_mode audits CUDA only"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            objects.trainer.train_epoch(x[:batch], y[:batch])  # exactly one step, and the epoch's end
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [f"{w.filename}:{w.lineno}: {str(w.message).splitlines()[0]}" for w in caught
             if "synchroniz" in str(w.message)]
    return {"passed": True, "syncs": len(syncs), "where": sorted(set(syncs)),
            "expected": "one per step (Trainer.check_finite) and the epoch's end (metrics, .item())"}


def check_cpu_vs_device(args) -> dict:
    """One forward and backward on the CPU and on the device, same weights and batch."""
    import torch
    from torch.nn import functional as F

    device = torch.device("cuda" if not args.dry_run else "cpu")
    results = {}
    for where in (torch.device("cpu"), device):
        cfg, data, objects = _objects(args, where)
        batch = cfg.train.batch_size
        inputs = objects.encoder(data.train_x[:batch])
        output = objects.model(inputs)
        loss = F.cross_entropy(output.counts, data.train_y[:batch])
        loss.backward()
        results[where.type if where.type not in results else f"{where.type} again"] = (
            loss.item(), [s.cpu() for s in output.spikes],
            {n: p.grad.cpu() for n, p in objects.model.named_parameters() if p.grad is not None})
    (cpu_loss, cpu_spikes, cpu_grads), (loss, spikes, grads) = results.values()
    mismatch = [float((a != b).float().mean()) for a, b in zip(cpu_spikes, spikes)]
    errors = {n: float((grads[n] - g).abs().max() / max(float(g.abs().max()), 1e-12)) for n, g in cpu_grads.items()}
    return {"passed": abs(loss - cpu_loss) < 1e-3 and max(mismatch) < 0.01,
            "loss_cpu": cpu_loss, "loss_device": loss, "spike_mismatch_fraction_per_layer": mismatch,
            "max_relative_gradient_error": max(errors.values()), "gradient_errors": errors}


CHECKS = {"repeatable": check_repeatable, "resume": check_resume, "sync_audit": check_sync_audit,
          "cpu_vs_device": check_cpu_vs_device}


def run_check(args) -> int:
    """``--check NAME``: one check in this process; its result as JSON and Markdown in tables/."""
    args.stamp = time.strftime("check_%Y%m%d_%H%M%S")  # fresh folders: a rerun checks anew, reusing nothing
    result = CHECKS[args.check](args)
    tables = Path(args.out) / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    (tables / f"{args.check}.json").write_text(json.dumps(result, indent=1, default=str))
    lines = [f"# {args.check}", ""] + [f"- {key}: {value}" for key, value in result.items()]
    (tables / f"{args.check}.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(result, indent=1, default=str))
    return 0 if result["passed"] else 1


# ----------------------------------------------------------------- the orchestration

def _run(command: list[str], log: Path, timeout_s: float, cwd: Path) -> tuple[str, float]:
    """Run ``command`` with its output in ``log``; at ``timeout_s`` send SIGTERM (g2g
    saves a checkpoint and stops), then SIGKILL a minute later. Returns (status, seconds)."""
    started = time.monotonic()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    with log.open("w") as output:
        output.write("$ " + " ".join(command) + "\n")
        output.flush()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=max(timeout_s, 1))
            status = "passed" if code == 0 else f"FAILED (exit {code})"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            status = "stopped at its time limit (run the same command to continue)"
    return status, time.monotonic() - started


def _steps(args) -> list[tuple[str, list[str]]]:
    python, out = sys.executable, Path(args.out)
    device = "cpu" if args.dry_run else "cuda"
    myself = [python, str(Path(__file__).resolve()), "--out", str(out), "--data-root", str(args.data_root),
              *(["--dry-run"] if args.dry_run else [])]
    env_script = ("import torch, platform; from g2g.hardware.precision import cpu_has_native_bf16; "
                  "print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', "
                  "torch.backends.cudnn.version(), 'python', platform.python_version()); "
                  "print('cuda available:', torch.cuda.is_available(), [torch.cuda.get_device_name(i) for i in "
                  "range(torch.cuda.device_count())]); print('CPU native bf16:', cpu_has_native_bf16(), "
                  "'threads', torch.get_num_threads())")
    env = ["bash", "-c", f"(nvidia-smi || echo 'no nvidia-smi'); {python} -c \"{env_script}\""]
    tests = [str(REPO_ROOT / "tests" / "hardware" / "test_cuda_paths.py")] if args.dry_run else [
        str(REPO_ROOT / "tests" / name) for name in
        ("hardware/test_cuda_paths.py", "hardware/test_precision.py", "snn/test_neurons.py",
         "hardware/test_hardware.py")]
    precisions = "32,bf16-mixed" if args.dry_run else "32,tf32,bf16-mixed,16-mixed"
    if args.dry_run:
        from g2g.hardware.precision import cpu_has_native_bf16
        precisions = precisions if cpu_has_native_bf16() else "32"
    train_step = [python, str(BENCHMARKS / "train_step.py"), "--device", device, "--precision", precisions,
                  "--sparsity", "static,dynamic", *(["--preset", "tiny", "--repeats", "1"] if args.dry_run
                                                    else ["--preset", "seed", "--repeats", "5"])]
    preset_times = [python, str(BENCHMARKS / "preset_times.py"), "--hardware", device, "--data-root",
                    str(args.data_root), *(["--presets", "quick", "--models", "dense,mixer", "--steps", "1",
                                            "--eval-images", "16"] if args.dry_run else [])]
    study = [python, str(REPO_ROOT / "run.py"), "study=published", "seed=43,44", f"hardware={device}",
             f"dataset.root={args.data_root}", "dataset.download=false", f"checkpoint.dir={out / 'checkpoints'}",
             f"tracking.uri=sqlite:///{out / 'mlflow.db'}",
             *([*TINY, "train.epochs=1"] if args.dry_run else [])]
    return [("env", env), ("tests", [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]),
            ("train_step", train_step),
            ("train_step_compiled",
             [*train_step, "--models", "mixer", "--sparsity", "static", "--lif-scan", "compiled"]),
            ("preset_times", preset_times),
            *[(name, [*myself, "--check", name]) for name in ("sync_audit", "repeatable", "cpu_vs_device", "resume")],
            ("published", study)]


def orchestrate(args) -> int:
    out = Path(args.out).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(exist_ok=True)
    args.out = out
    budget_s, started = args.budget_minutes * 60, time.monotonic()
    rows, failed = [], False
    for number, (name, command) in enumerate(_steps(args), start=1):
        left = budget_s - (time.monotonic() - started)
        share = left if name == "published" else SHARES[name] * budget_s
        if left < 30 or (name != "published" and share > left):
            rows.append((name, "skipped: the budget is spent", 0.0))
            continue
        status, seconds = _run(command, out / "logs" / f"{number:02d}_{name}.log", min(share, left), out)
        failed |= status.startswith("FAILED")
        rows.append((name, status, seconds))
        print(f"{name}: {status} ({seconds:.0f} s)", flush=True)
    lines = [f"# GPU check{' (dry run: CPU, tiny sizes)' if args.dry_run else ''}", "",
             f"budget {args.budget_minutes} min, used {(time.monotonic() - started) / 60:.1f} min; "
             f"logs in logs/, results in tables/, MLflow in mlflow.db", "",
             "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {status} | {seconds:.0f} |" for name, status, seconds in rows]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the output folder (created)")
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument("--data-root", default=str(REPO_ROOT / "data"), help="the data sets (dataset.root)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check the script itself")
    parser.add_argument("--check", choices=sorted(CHECKS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data_root = str(Path(args.data_root).resolve())
    args.hardware = "cpu" if args.dry_run else "cuda"
    if args.check:
        return run_check(args)
    if not math.isfinite(args.budget_minutes) or args.budget_minutes <= 0:
        parser.error("--budget-minutes must be a positive number")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
