"""Data loading: torchvision's on-disk formats, the Debian Fashion-MNIST fallback,
and clear errors for missing or corrupt files."""

import gzip
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock
from torchvision import datasets, transforms

from conftest import write_cifar, write_fashion_mnist, write_idx
from g2g.data.datasets import (
    FASHION_MNIST_SIZES,
    DatasetUnavailableError,
    fashion_mnist_raw_dir,
    load_dataset,
    prepare_fashion_mnist,
)


def test_fashion_mnist_idx_loads_as_flat_tensors_in_unit_range(tmp_path):
    write_fashion_mnist(tmp_path, num_train=40, num_test=12)
    data = load_dataset("fashionmnist", tmp_path, download=False)
    assert data.train_x.shape == (40, 784) and data.test_x.shape == (12, 784)
    assert data.train_x.dtype == torch.float32 and 0 <= data.train_x.min() and data.train_x.max() <= 1
    assert data.train_y.dtype == torch.int64 and data.num_classes == 10
    reference = datasets.FashionMNIST(str(tmp_path), train=True, transform=transforms.ToTensor())
    image, label = reference[3]
    torch.testing.assert_close(data.train_x[3], image.flatten())
    assert data.train_y[3].item() == label


def test_cifar_pickles_load_in_to_tensor_channel_order(tmp_path, trust_tiny_cifar):
    write_cifar(tmp_path, "cifar10", num_train=25, num_test=10)
    data = load_dataset("cifar10", tmp_path, download=False)
    assert data.train_x.shape == (25, 3072) and data.num_classes == 10
    reference = datasets.CIFAR10(str(tmp_path), train=True, transform=transforms.ToTensor())
    image, label = reference[7]
    torch.testing.assert_close(data.train_x[7], image.flatten())
    assert data.train_y[7].item() == label
    write_cifar(tmp_path, "cifar100", num_train=30, num_test=10)
    assert load_dataset("cifar100", tmp_path, download=False).num_classes == 100


def test_subsets_are_seeded(tmp_path):
    write_fashion_mnist(tmp_path, num_train=50, num_test=20)
    first = load_dataset("fashionmnist", tmp_path, download=False, train_subset=10, test_subset=5, seed=3)
    again = load_dataset("fashionmnist", tmp_path, download=False, train_subset=10, test_subset=5, seed=3)
    assert first.train_x.shape == (10, 784) and first.test_x.shape == (5, 784)
    assert torch.equal(first.train_x, again.train_x)


def _fake_debian_dir(folder: Path, truncate: str | None = None) -> Path:
    """Archives shaped like the Debian package's: full-size IDX files, gzip-compressed."""
    folder.mkdir(parents=True)
    for name, size in FASHION_MNIST_SIZES.items():
        is_images = "images" in name
        count = 60000 if name.startswith("train") else 10000
        dims = (count, 28, 28) if is_images else (count,)
        header = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
        payload = bytes(size - len(header))
        content = header + payload
        if name == truncate:
            content = content[: size // 2]
        with gzip.open(folder / f"{name}.gz", "wb", compresslevel=1) as file:
            file.write(content)
    return folder


def test_debian_archives_are_decompressed_where_torchvision_reads(tmp_path):
    debian = _fake_debian_dir(tmp_path / "debian")
    raw = prepare_fashion_mnist(tmp_path / "data", download=False, debian_dir=debian)
    assert raw == fashion_mnist_raw_dir(tmp_path / "data")
    assert {p.name: p.stat().st_size for p in raw.iterdir()} == FASHION_MNIST_SIZES
    assert len(datasets.FashionMNIST(str(tmp_path / "data"), train=False)) == 10000


def test_truncated_debian_archive_is_refused_without_leaving_a_partial_file(tmp_path):
    debian = _fake_debian_dir(tmp_path / "debian", truncate="t10k-images-idx3-ubyte")
    with pytest.raises(DatasetUnavailableError, match="t10k-images-idx3-ubyte.gz decompresses to"):
        prepare_fashion_mnist(tmp_path / "data", download=False, debian_dir=debian)
    raw = fashion_mnist_raw_dir(tmp_path / "data")
    assert not (raw / "t10k-images-idx3-ubyte").exists()
    assert not [p for p in raw.iterdir() if p.name.endswith((".tmp", ".partial"))]


def test_missing_data_names_both_remedies(tmp_path):
    with pytest.raises(DatasetUnavailableError) as error:
        prepare_fashion_mnist(tmp_path / "data", download=False, debian_dir=tmp_path / "nowhere")
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "dataset.download=true" in message and "train-images-idx3-ubyte is missing" in message


def test_truncated_idx_file_is_reported_with_its_path(tmp_path):
    raw = write_fashion_mnist(tmp_path, num_train=20, num_test=10)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DatasetUnavailableError,
                       match="(?s)train-images-idx3-ubyte has .*truncated or corrupt.*Delete the damaged files"):
        prepare_fashion_mnist(tmp_path, download=False, debian_dir=tmp_path / "nowhere")


def test_image_and_label_counts_must_agree(tmp_path):
    raw = write_fashion_mnist(tmp_path, num_train=20, num_test=10)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(19, dtype=np.uint8))
    with pytest.raises(DatasetUnavailableError, match="20 images but 19 labels"):
        prepare_fashion_mnist(tmp_path, download=False, debian_dir=tmp_path / "nowhere")


def test_missing_cifar_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="(?s)cifar10 could not be loaded from .*dataset.download=true"):
        load_dataset("cifar10", tmp_path, download=False)


def test_data_command_reports_what_it_found_or_how_to_get_it(tmp_path, capsys):
    from g2g.data.datasets import main

    write_fashion_mnist(tmp_path / "present", num_train=20, num_test=10)
    assert main(["fashionmnist", "--root", str(tmp_path / "present"), "--no-download"]) == 0
    assert "20 training and 10 test examples" in capsys.readouterr().out
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        assert main(["fashionmnist", "--root", str(tmp_path / "absent"), "--no-download"]) == 1
        assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().out


DEBIAN_FILES = Path("/usr/share/datasets/fashion-mnist")


def _start(command: list[str], cwd: Path) -> subprocess.Popen:
    """Start ``command`` with this checkout's g2g first on the path and one OMP thread,
    its stdout and stderr together in one text pipe."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[2])] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _start_at_once(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Run the commands as concurrent processes and wait for all."""
    processes = [_start(command, cwd) for command in commands]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    return [subprocess.CompletedProcess(p.args, p.returncode, out) for p, out in zip(processes, outputs)]


@pytest.mark.skipif(not (DEBIAN_FILES / "train-images-idx3-ubyte.gz").exists(),
                    reason="needs the Debian package dataset-fashion-mnist")
@pytest.mark.integration
def test_four_data_commands_at_once_on_an_empty_folder_all_succeed_and_unpack_once(tmp_path):
    root = tmp_path / "data"
    finished = _start_at_once([[sys.executable, "-m", "g2g.data", "fashionmnist", "--root", str(root)]] * 4, tmp_path)
    assert [run.returncode for run in finished] == [0] * 4, "\n".join(run.stdout for run in finished)
    raw = fashion_mnist_raw_dir(root)
    assert {p.name: p.stat().st_size for p in raw.iterdir()} == FASHION_MNIST_SIZES
    for name in FASHION_MNIST_SIZES:
        with gzip.open(DEBIAN_FILES / f"{name}.gz", "rb") as archive:
            assert (raw / name).read_bytes() == archive.read(), name
    outputs = "\n".join(run.stdout for run in finished)
    assert outputs.count("60000 training and 10000 test examples") == 4
    assert outputs.count("decompressing the Fashion-MNIST archives") == 1, outputs
    assert not [p for p in root.rglob("*") if p.name.endswith((".tmp", ".partial"))]


@pytest.mark.integration
def test_a_job_waits_for_the_one_preparing_the_data_says_so_once_and_uses_its_files(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    lock_file = root / ".fashionmnist.lock"  # the name docs/running.md gives
    with FileLock(lock_file):  # another job is preparing the folder
        waiting = _start([sys.executable, "-m", "g2g.data", "fashionmnist", "--root", str(root)], tmp_path)
        before = []
        while (line := waiting.stdout.readline()) and not line.startswith("waiting"):
            before.append(line)
        assert line.strip() == f"waiting for another job to prepare Fashion-MNIST in " \
                               f"{fashion_mnist_raw_dir(root)} (lock file {lock_file})", "".join(before)
        write_fashion_mnist(root, num_train=20, num_test=10)  # what that job leaves when done
    output = "".join(before) + line + waiting.communicate(timeout=60)[0]
    assert waiting.returncode == 0, output
    assert "20 training and 10 test examples" in output  # its files, not the Debian package's
    assert output.count("waiting for another job") == 1 and "decompressing" not in output


#: ``python -m g2g.data cifar10`` with the network replaced by a slow copy of a local
#: tarball (printing DOWNLOAD) and torchvision's MD5 checks by "the file exists" (the
#: tiny archive cannot match the real sums); the rest is torchvision's and g2g's code
OFFLINE_CIFAR_DOWNLOAD = """
import os, shutil, sys, time
from torchvision.datasets import cifar, utils
exists = lambda fpath, md5=None: os.path.isfile(fpath)
cifar.check_integrity = utils.check_integrity = exists
utils._get_redirect_url = lambda url, max_hops=3: url
def fake_urlretrieve(url, fpath, chunk_size=None):
    print("DOWNLOAD", flush=True)
    time.sleep(2)
    shutil.copyfile(sys.argv[1], fpath)
utils._urlretrieve = fake_urlretrieve
from g2g.data.datasets import main
sys.exit(main(["cifar10", "--root", sys.argv[2]]))
"""


@pytest.mark.integration
def test_four_cifar_downloads_at_once_download_once_and_leave_no_temporary_folder(tmp_path):
    source = tmp_path / "source"
    write_cifar(source, "cifar10", num_train=25, num_test=10)
    server = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(server, "w:gz") as archive:
        archive.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    root = tmp_path / "data"
    killed = root / ".CIFAR10.k1ll3d.tmp" / "cifar-10-batches-py"  # what a download killed half-way leaves
    killed.mkdir(parents=True)
    (killed / "data_batch_1").write_bytes(b"half")
    command = [sys.executable, "-c", OFFLINE_CIFAR_DOWNLOAD, str(server), str(root)]
    finished = _start_at_once([command] * 4, tmp_path)
    outputs = "\n".join(run.stdout for run in finished)
    assert [run.returncode for run in finished] == [0] * 4, outputs
    assert outputs.count("DOWNLOAD") == 1 and outputs.count("25 training and 10 test examples") == 4
    assert sorted(p.name for p in root.iterdir()) == [".cifar10.lock", "cifar-10-batches-py", "cifar-10-python.tar.gz"]
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        folder = "cifar-10-batches-py"
        assert (root / folder / name).read_bytes() == (source / folder / name).read_bytes(), name
