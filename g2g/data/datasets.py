"""Datasets as whole tensors on the device.

Every split is loaded once through torchvision's dataset classes and kept as one
float tensor ``[N, D]`` (pixels scaled to [0, 1], flattened) plus int64 labels
``[N]``; the training loop takes batches as index slices, with no per-image work.

Fashion-MNIST offline: the Debian package ``dataset-fashion-mnist`` installs the
four IDX archives under ``/usr/share/datasets/fashion-mnist``. Debian recompressed
them, so their checksums differ from torchvision's list and torchvision's download
step rejects them; :func:`prepare_fashion_mnist` decompresses them into the folder
torchvision's loader reads (``ROOT/FashionMNIST/raw``) and checks the decompressed
sizes instead.

Jobs that share a data root (the jobs of a sweep, started at once) prepare a data set
once: whoever finds it missing takes the lock ``ROOT/.NAME.lock``
(:func:`g2g.files.prepare_once`), the others wait, saying so once, and then find it
complete. Every file is written under a temporary name of its own and renamed into
place when complete, so a job killed half-way never leaves a half file under a name
the loaders read.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets

from g2g.files import atomic_write, path_argument, preparation_lock, prepare_once
from g2g.shell import shell_command

log = logging.getLogger(__name__)

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
#: decompressed size in bytes of each Fashion-MNIST IDX file (header + payload)
FASHION_MNIST_SIZES = {
    "train-images-idx3-ubyte": 16 + 60000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}
DATASETS = {
    "fashionmnist": datasets.FashionMNIST,
    "cifar10": datasets.CIFAR10,
    "cifar100": datasets.CIFAR100,
}


class DatasetUnavailableError(RuntimeError):
    """The data set is not on disk and could not be fetched; the message says how."""


@dataclass
class DataSplits:
    """A data set in memory.

    train_x: ``[N_train, D]`` float32 in [0, 1]; train_y: ``[N_train]`` int64.
    test_x: ``[N_test, D]``; test_y: ``[N_test]``.
    class_names: one name per class (C of them).
    val_x, val_y: a validation split held out of the training set (``[N_val, D]``,
    ``[N_val]``), or None (:func:`g2g.data.folds.hold_out_validation`).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: list[str]
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None

    @property
    def input_dim(self) -> int:
        return self.train_x.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def fashion_mnist_raw_dir(root: str | os.PathLike) -> Path:
    """Folder where torchvision's ``FashionMNIST`` reads the IDX files."""
    return Path(root) / "FashionMNIST" / "raw"


def _idx_problem(path: Path, magic: int, item_bytes: int) -> tuple[str | None, int]:
    """Check one IDX file: its magic number and that its size matches its header.
    Returns (problem or None, number of items)."""
    if not path.exists():
        return f"{path} is missing", 0
    header_size = 16 if magic == IDX_IMAGES_MAGIC else 8
    with open(path, "rb") as file:
        header = file.read(header_size)
    if len(header) < header_size or int.from_bytes(header[:4], "big") != magic:
        return f"{path} is not an IDX file (bad header)", 0
    count = int.from_bytes(header[4:8], "big")
    expected = header_size + count * item_bytes
    size = path.stat().st_size
    if size != expected:
        return f"{path} has {size} bytes, its header promises {expected} (truncated or corrupt)", 0
    return None, count


def _check_fashion_mnist_files(raw_dir: Path) -> list[str]:
    """Problems with the decompressed IDX files in ``raw_dir`` (empty when all good):
    missing files, bad headers, sizes that do not match the header, image and label
    counts that differ."""
    problems = []
    for split in ("train", "t10k"):
        image_problem, images = _idx_problem(raw_dir / f"{split}-images-idx3-ubyte", IDX_IMAGES_MAGIC, 28 * 28)
        label_problem, labels = _idx_problem(raw_dir / f"{split}-labels-idx1-ubyte", IDX_LABELS_MAGIC, 1)
        problems += [problem for problem in (image_problem, label_problem) if problem]
        if not image_problem and not label_problem and images != labels:
            problems.append(f"{raw_dir}: {split} has {images} images but {labels} labels")
    return problems


def _decompress_debian_files(source_dir: Path, raw_dir: Path) -> None:
    """Decompress the Debian archives into ``raw_dir``, each through a temporary file of
    its own (:func:`g2g.files.atomic_write`) renamed into place only when complete and
    of the right size. Files already there with the right size are kept."""
    log.info("decompressing the Fashion-MNIST archives of %s into %s", source_dir, raw_dir)
    for name, size in FASHION_MNIST_SIZES.items():
        target = raw_dir / name
        if target.exists() and target.stat().st_size == size:
            continue

        def decompress(file, archive: Path = source_dir / f"{name}.gz", size: int = size) -> None:
            with gzip.open(archive, "rb") as src:
                shutil.copyfileobj(src, file)
            if file.tell() != size:
                raise DatasetUnavailableError(
                    f"{archive} decompresses to {file.tell()} bytes, expected {size}; reinstall the "
                    f"package: {shell_command('apt-get', 'install', '--reinstall', DEBIAN_PACKAGE)}"
                )

        atomic_write(target, decompress)


def data_lock_path(root: str | os.PathLike, name: str) -> Path:
    """The lock file under which one job at a time prepares data set ``name`` (a key of
    :data:`DATASETS`) in ``root``: ``ROOT/.NAME.lock``."""
    return Path(root) / f".{name}.lock"


def _archives(dataset_class) -> list[str]:
    """The archives torchvision downloads for ``dataset_class``, relative to the root."""
    if hasattr(dataset_class, "filename"):  # CIFAR: one tarball in the root
        return [dataset_class.filename]
    return [f"{dataset_class.__name__}/raw/{os.path.basename(name)}" for name, _ in dataset_class.resources]


def _download_beside(dataset_class, root: Path) -> None:
    """torchvision's download of both splits of ``dataset_class`` into a new folder of
    its own inside ``root`` (``.CLASS.RANDOM.tmp``), then each file it made renamed to
    the same place under ``root``. torchvision writes straight under the final names;
    this way a download killed half-way leaves only that folder, which the next
    download removes. Call it holding the data set's lock (:func:`data_lock_path`).

    Archives already under ``root`` are copied in first, so torchvision checks their
    MD5 sums and unpacks them instead of downloading them again.
    """
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{dataset_class.__name__}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dataset_class.__name__}.", suffix=".tmp", dir=root))
    try:
        for archive in _archives(dataset_class):
            if (root / archive).is_file():
                (staging / archive).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / archive, staging / archive)
        for train in (True, False):
            dataset_class(str(staging), train=train, download=True)
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            target = root / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install_debian_package() -> bool:
    """``apt-get install`` the Debian Fashion-MNIST package when running as root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    log.info("installing %s with apt-get", DEBIAN_PACKAGE)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", DEBIAN_PACKAGE]):
        if subprocess.run(command, env=env, capture_output=True).returncode != 0:
            return False
    return True


def prepare_fashion_mnist(
    root: str | os.PathLike,
    download: bool = True,
    debian_dir: Path = DEBIAN_FASHION_MNIST_DIR,
) -> Path:
    """Make sure the four Fashion-MNIST IDX files are in ``ROOT/FashionMNIST/raw``.

    Tries, in order: files already there (sizes checked); the Debian package's files
    (decompressed); torchvision's download (needs the internet); installing the
    Debian package with apt-get (needs root). Files are only ever written through a
    temporary name, so a failed attempt never leaves a partial file in place. All but
    the first step run holding ``ROOT/.fashionmnist.lock``: of several jobs started at
    once, one prepares the files and the others wait for it, then find them.

    Args:
        root: data root (``dataset.root``; a leading ``~`` is expanded, as torchvision's
            loader expands it).
        download: allow the network download and the apt-get install.
        debian_dir: where the Debian package puts its archives.
    Returns:
        The raw folder.
    Raises:
        DatasetUnavailableError: nothing worked; the message names both remedies.
    """
    root = os.path.expanduser(root)
    raw_dir = fashion_mnist_raw_dir(root)
    prepare_once(data_lock_path(root, "fashionmnist"), lambda: not _check_fashion_mnist_files(raw_dir),
                 lambda: _fetch_fashion_mnist(Path(root), download, debian_dir), f"Fashion-MNIST in {raw_dir}")
    return raw_dir


def _fetch_fashion_mnist(root: Path, download: bool, debian_dir: Path) -> None:
    """The part of :func:`prepare_fashion_mnist` after the files on disk, run holding
    the lock; raises :class:`DatasetUnavailableError` when nothing worked."""
    raw_dir = fashion_mnist_raw_dir(root)
    if (debian_dir / "train-images-idx3-ubyte.gz").exists():
        _decompress_debian_files(debian_dir, raw_dir)
        return
    attempts = []
    if download:
        try:
            _download_beside(datasets.FashionMNIST, root)
            if not _check_fashion_mnist_files(raw_dir):
                return
        except Exception as error:  # noqa: BLE001 (network errors come in many types)
            attempts.append(f"torchvision download failed: {error}")
        if _install_debian_package() and (debian_dir / "train-images-idx3-ubyte.gz").exists():
            _decompress_debian_files(debian_dir, raw_dir)
            return
        attempts.append(f"apt-get install {DEBIAN_PACKAGE} was not possible (needs root and apt-get)")
    problems = _check_fashion_mnist_files(raw_dir)
    damaged = any(not problem.endswith("is missing") for problem in problems)
    raise DatasetUnavailableError(
        "Fashion-MNIST is not available:\n  "
        + "\n  ".join(problems + attempts)
        + ("\nDelete the damaged files listed above, then"
           if damaged else "\nTo get it,")
        + " either\n"
        f"  - run with internet access and dataset.download=true (torchvision downloads it into {raw_dir}), or\n"
        f"  - install the Debian package: {shell_command('sudo', 'apt-get', 'install', DEBIAN_PACKAGE)} "
        f"(its files in {debian_dir} are used automatically)."
    )


def _to_tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision dataset -> (``[N, D]`` float32 in [0, 1], ``[N]`` int64)."""
    images = torch.as_tensor(dataset.data)
    if images.ndim == 4:  # CIFAR: [N, H, W, C] uint8 -> [N, C, H, W], the ToTensor layout
        images = images.permute(0, 3, 1, 2)
    features = images.reshape(len(images), -1).to(torch.float32).div_(255.0)
    return features, torch.as_tensor(dataset.targets, dtype=torch.int64)


def _subset(x: torch.Tensor, y: torch.Tensor, size: int | None, seed: int):
    if size is None or size >= len(y):
        return x, y
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:size]
    return x[keep], y[keep]


def _open_or_download(dataset_class, name: str, root: Path, download: bool):
    """torchvision's train and test datasets of ``dataset_class`` from ``root``; when they
    cannot be opened (missing, or torchvision's MD5 check fails) and ``download`` is on,
    downloaded first by one job at a time (:func:`data_lock_path`): a job that waited
    opens what the other one downloaded.

    Raises:
        RuntimeError, OSError, ValueError: torchvision's errors.
    """
    def open_splits():
        return dataset_class(str(root), train=True), dataset_class(str(root), train=False)

    try:
        return open_splits()
    except (RuntimeError, OSError, ValueError):
        if not download:
            raise
    with preparation_lock(data_lock_path(root, name), f"{name} in {root}"):
        try:
            return open_splits()  # another job downloaded it while this one waited
        except (RuntimeError, OSError, ValueError):
            _download_beside(dataset_class, root)
    return open_splits()


def load_dataset(
    name: str,
    root: str | os.PathLike,
    *,
    download: bool = True,
    train_subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> DataSplits:
    """Load a data set's train and test splits into memory on ``device``.

    Args:
        name: ``fashionmnist``, ``cifar10`` or ``cifar100``.
        root: data root; torchvision's layout below it (a leading ``~`` is expanded).
        download: allow fetching missing files (see :func:`prepare_fashion_mnist`).
        train_subset, test_subset: keep a seeded random subset of this many
            examples (``None``: the whole split).
        seed: seed of the subsets.
        device: where the tensors live.
    Returns:
        :class:`DataSplits` (Fashion-MNIST D=784, CIFAR D=3072).
    Raises:
        ValueError: unknown name.
        DatasetUnavailableError: files missing or corrupt and not fetchable.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset.name={name!r} is unknown; allowed: {', '.join(DATASETS)}")
    dataset_class = DATASETS[name]
    root = os.path.expanduser(root)
    if name == "fashionmnist":
        prepare_fashion_mnist(root, download)
        download = False
    try:
        train, test = _open_or_download(dataset_class, name, Path(root), download)
    except (RuntimeError, OSError, ValueError) as error:
        raise DatasetUnavailableError(
            f"{name} could not be loaded from {Path(root).resolve()}: {error}\n"
            f"Run with internet access and dataset.download=true, or put torchvision's "
            f"files for {name} under that folder (dataset.root=PATH)."
        ) from error
    train_x, train_y = _subset(*_to_tensors(train), train_subset, seed)
    test_x, test_y = _subset(*_to_tensors(test), test_subset, seed + 1)
    return DataSplits(
        train_x.to(device), train_y.to(device), test_x.to(device), test_y.to(device),
        list(train.classes),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m g2g.data [fashionmnist|cifar10|cifar100] [--root data]``: make sure a
    data set is on disk (what ``make run`` calls before training). ``--root`` means what
    ``dataset.root`` means (``~`` and ``$NAME`` expanded, relative to the current folder)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m g2g.data", description=main.__doc__)
    parser.add_argument("name", nargs="?", default="fashionmnist", choices=sorted(DATASETS))
    parser.add_argument("--root", default="data", type=path_argument,
                        help="data root (dataset.root), default: data")
    parser.add_argument("--no-download", action="store_true", help="only use files already on disk")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        data = load_dataset(args.name, args.root, download=not args.no_download)
    except DatasetUnavailableError as error:
        print(f"error: {error}")
        return 1
    print(f"{args.name}: {len(data.train_y)} training and {len(data.test_y)} test examples "
          f"under {Path(args.root).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
