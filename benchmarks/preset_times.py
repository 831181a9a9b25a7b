"""Expected run time of each experiment preset on this machine (CPU or GPU).

    python benchmarks/preset_times.py                                  # hardware=auto
    python benchmarks/preset_times.py --hardware cuda --steps 30       # on an NVIDIA GPU
    python benchmarks/preset_times.py --presets quick --models dense,mixer --sparsity dynamic

For each preset (``conf/experiment/``) and model, the config is composed with Hydra
exactly as ``run.py`` composes it, and the network, optimizer, DST and trainer are
built as a run builds them. On real Fashion-MNIST (``--data-root``; random images of
the same shape when it is missing, which the table says) the script trains one
warm-up batch, then ``--steps`` batches, and evaluates ``--eval-images`` test images.
It extrapolates

    epoch time = ceil(60000 / batch) x time per training step
                 + 10000 / eval-images x evaluation time
    run time   = epochs x epoch time

and prints a Markdown table. Times come from ``time.perf_counter`` around work that
ends in a host synchronisation (``torch.cuda.synchronize`` on a GPU). Start-up (data
loading, MLflow) is not included: add ~5-10 s per run.

    python benchmarks/preset_times.py --from-runs g2g_published

instead prints what real runs took: every finished run of that MLflow experiment
(``--tracking-uri``, default ``sqlite:///$PWD/mlflow.db``) with its summed training
time (metric ``epoch_time_s``) and evaluation time (``evaluation_time_s``; blank for
runs logged before it existed), the device and torch threads it ran with. No
extrapolation: whole runs, as benchmarks/README.md reports them.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from g2g.build.objects import build, instantiate_option  # noqa: E402
from g2g.build.random_streams import seed_everything  # noqa: E402
from g2g.data.datasets import DataSplits, load_dataset  # noqa: E402
from g2g.files import path_argument  # noqa: E402
from g2g.hardware.device import select_device  # noqa: E402

TRAIN_IMAGES, TEST_IMAGES = 60000, 10000


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _data(root: str, device: torch.device) -> tuple[DataSplits, str]:
    """Fashion-MNIST on ``device``, or random images of its shape, and which of the two."""
    try:
        return load_dataset("fashionmnist", root=root, download=False, device=device), "Fashion-MNIST"
    except Exception as error:  # noqa: BLE001 (timing only: shapes matter, values change spike counts a little)
        print(f"note: Fashion-MNIST not loaded ({error.__class__.__name__}); timing random images", file=sys.stderr)
        generator = torch.Generator().manual_seed(0)
        train_x = torch.rand(TRAIN_IMAGES, 784, generator=generator).to(device)
        test_x = torch.rand(TEST_IMAGES, 784, generator=generator).to(device)
        labels = torch.randint(0, 10, (TRAIN_IMAGES + TEST_IMAGES,), generator=generator).to(device)
        return DataSplits(train_x, labels[:TRAIN_IMAGES], test_x, labels[TRAIN_IMAGES:],
                          [str(label) for label in range(10)]), "random images"


def time_preset(preset: str, model: str, sparsity: str, *, hardware: str, steps: int, eval_images: int,
                data: DataSplits) -> dict:
    """Measured step and evaluation times of one preset and model, and the extrapolation."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        overrides = [f"experiment={preset}", f"model={model}", f"hardware={hardware}", "train.progress=false"]
        if sparsity == "dynamic" and model != "dense":
            overrides += ["sparsity=dynamic"]
        cfg = compose(config_name="config", overrides=overrides)
    device = instantiate_option(cfg.hardware).apply()
    seed_everything(cfg.seed)
    train_x, train_y, test_x, test_y = (t.to(device) for t in (data.train_x, data.train_y, data.test_x, data.test_y))
    trainer = build(cfg, data, device).trainer
    batch = cfg.train.batch_size
    trainer.train_epoch(train_x[:batch], train_y[:batch])  # warm-up (allocations, kernels)
    _synchronize(device)
    started = time.perf_counter()
    trainer.train_epoch(train_x[:batch * steps], train_y[:batch * steps])
    _synchronize(device)
    step_s = (time.perf_counter() - started) / steps
    started = time.perf_counter()
    trainer.evaluate(test_x[:eval_images], test_y[:eval_images])
    _synchronize(device)
    eval_s = (time.perf_counter() - started) * TEST_IMAGES / eval_images
    epoch_s = math.ceil(TRAIN_IMAGES / batch) * step_s + eval_s
    return {"preset": preset, "model": model, "sparsity": sparsity if model != "dense" else "static",
            "device": str(device), "hidden": cfg.model.hidden_dim, "num_steps": cfg.encoder.num_steps,
            "batch": batch, "epochs": cfg.train.epochs, "step_s": step_s, "epoch_s": epoch_s,
            "run_s": cfg.train.epochs * epoch_s}


def measured_runs(experiment: str, tracking_uri: str) -> list[dict]:
    """The finished training runs of MLflow experiment ``experiment``: configuration,
    seed, setting, device and threads, summed training and evaluation seconds.

    Raises:
        g2g.reporting.queries.ResultsError: no such experiment or no finished run.
    """
    from g2g.reporting.comparison import compare, override_label
    from g2g.reporting.queries import experiment_rows, open_store
    from g2g.tracking.names import METRIC_EVALUATION_TIME

    client = open_store(tracking_uri)
    runs = []
    # configurations from the params that vary among the runs (g2g.reporting.comparison), named by the model
    # and those params: model=mixer model.p_inter=0.1
    for configuration in compare(experiment_rows(client, experiment), baselines=[]).configurations:
        label = override_label({"model.name": configuration.params.get("model.name", "?"), **configuration.settings})
        for row in configuration.runs:
            evaluations = client.get_metric_history(row["run_id"], METRIC_EVALUATION_TIME)
            params = row["params"]
            runs.append({"configuration": label, "seed": int(row["seed"]), "hidden": params.get("model.hidden_dim"),
                         "num_steps": params.get("encoder.num_steps"), "batch": params.get("train.batch_size"),
                         "epochs": row["epochs"], "device": f"{row['device']}, {row['num_threads']} thread(s)",
                         "train_s": row["train_time_s"],
                         "evaluation_s": sum(m.value for m in evaluations) if evaluations else None})
    return sorted(runs, key=lambda run: (run["configuration"], run["seed"]))


def print_measured_runs(experiment: str, tracking_uri: str) -> None:
    """Print :func:`measured_runs` as a Markdown table."""
    print(f"finished runs of the MLflow experiment {experiment!r} ({tracking_uri})\n")
    print("| model | seed | hidden | steps | batch | epochs | device | training | evaluation | run |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in measured_runs(experiment, tracking_uri):
        evaluation = "" if run["evaluation_s"] is None else _duration(run["evaluation_s"])
        total = run["train_s"] + (run["evaluation_s"] or 0.0)
        print(f"| {run['configuration']} | {run['seed']} | {run['hidden']} | {run['num_steps']} | {run['batch']} "
              f"| {run['epochs']} | {run['device']} | {_duration(run['train_s'])} | {evaluation} "
              f"| {_duration(total)}{'' if run['evaluation_s'] is not None else ' (training only)'} |")


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="quick,fmnist_h1024,seed_defaults",
                        help="comma-separated experiment= options from conf/experiment/")
    parser.add_argument("--models", default="dense,mixer", help="comma-separated: dense, index, random, mixer")
    parser.add_argument("--sparsity", default="static", choices=["static", "dynamic"],
                        help="dynamic: the sparse models rewire with the sparsity=dynamic defaults")
    parser.add_argument("--hardware", default="auto", help="hardware group option: auto, cpu, cuda, directml")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per preset and model")
    parser.add_argument("--eval-images", type=int, default=2000, help="test images evaluated (scaled to 10000)")
    parser.add_argument("--data-root", default=str(REPO / "data"), type=path_argument)
    parser.add_argument("--from-runs", metavar="EXPERIMENT", default=None,
                        help="print what the finished runs of this MLflow experiment took instead of timing")
    parser.add_argument("--tracking-uri", default=None, help="with --from-runs; default: sqlite:///$PWD/mlflow.db")
    args = parser.parse_args(argv)
    if args.from_runs:
        from g2g.reporting.queries import ResultsError
        from g2g.tracking.store import absolute_tracking_uri, default_tracking_uri

        try:
            print_measured_runs(args.from_runs, absolute_tracking_uri(args.tracking_uri, Path.cwd())
                                if args.tracking_uri else default_tracking_uri())
        except (ResultsError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    device = select_device(args.hardware)
    data, source = _data(args.data_root, torch.device("cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; data: {source}; {args.steps} timed steps each\n")
    print("| preset | model | sparsity | hidden | steps | batch | epochs | s / training step | epoch | run |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        for model in args.models.split(","):
            row = time_preset(preset, model, args.sparsity, hardware=args.hardware, steps=args.steps,
                              eval_images=args.eval_images, data=data)
            print(f"| {row['preset']} | {row['model']} | {row['sparsity']} | {row['hidden']} | {row['num_steps']} "
                  f"| {row['batch']} | {row['epochs']} | {row['step_s']:.3f} | {_duration(row['epoch_s'])} "
                  f"| {_duration(row['run_s'])} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
