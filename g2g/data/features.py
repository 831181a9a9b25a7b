"""Frozen CIFAR ResNet-32 feature extractor in front of the SNN (``features=resnet32``).

The network is the CIFAR ResNet of He et al. (2016, "Deep Residual Learning", Sec.
4.2: 3x3 stem with 16 channels, three stages of 5 basic blocks with 16/32/64
channels), with the module names of the widely used pretrained checkpoints of
chenyaofo/pytorch-cifar-models, so those state dicts load key for key. For the SNN it
is truncated after its second stage (32 channels at 16x16), average-pooled to 4x4
and flattened: 512 features per image. Those are post-ReLU averages, non-negative
with no upper bound, so each image's feature vector is min-max normalised into
[0, 1] (:func:`minmax_per_sample`, as the public re-implementation
APapafragkakis/G2G-Sparse-Spiking-Neural-Net does before encoding): rate coding
then gets spike probabilities and current coding inputs on the pixels' scale.

The extractor is frozen, so features are computed once per image set and cached on
disk (keyed by the weights, the images, :data:`CACHE_VERSION` and the device's
arithmetic) and in memory;
training never runs it.

Train one offline (no internet needed, CIFAR files on disk):

    python -m g2g.data.features train --dataset cifar10 --root data --epochs 30 --out resnet32_cifar10.pt
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
from contextlib import nullcontext
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torch.nn import functional as F

from g2g.files import atomic_torch_save, path_argument, preparation_lock, prepare_once
from g2g.shell import hydra_override, shell_command

log = logging.getLogger(__name__)

#: public checkpoints of chenyaofo/pytorch-cifar-models, loaded with torch.hub
HUB_WEIGHTS = {
    "cifar10": "https://github.com/chenyaofo/pytorch-cifar-models/releases/download/resnet/cifar10_resnet32-ef93fc4d.pt",
    "cifar100": "https://github.com/chenyaofo/pytorch-cifar-models/releases/download/resnet/cifar100_resnet32-84213ce6.pt",
}
#: the input normalisation those checkpoints were trained with (per RGB channel)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
FEATURE_DIM = 512
#: part of the on-disk cache's file names; raise it whenever the features change, so
#: caches of earlier versions are never read (1: unnormalised, 2: min-max per image)
CACHE_VERSION = 2
#: added to the max - min denominator of :func:`minmax_per_sample`, as in the public code
MINMAX_EPSILON = 1e-8


class FeaturesUnavailableError(RuntimeError):
    """The ResNet-32 weights cannot be loaded; the message says how to get them."""


def minmax_per_sample(features: torch.Tensor, eps: float = MINMAX_EPSILON) -> torch.Tensor:
    """Each row min-max normalised into [0, 1]: ``(f - min) / (max - min + eps)`` over
    the row's features, ``[B, D]`` -> ``[B, D]``. A constant row becomes all zeros.

    The public re-implementation's ``_minmax_per_sample`` (``src/train.py`` of
    APapafragkakis/G2G-Sparse-Spiking-Neural-Net) computes the same, per image over
    its flattened feature vector, with ``eps`` 1e-8.
    """
    low = features.min(dim=1, keepdim=True).values
    high = features.max(dim=1, keepdim=True).values
    return (features - low) / (high - low + eps)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (1x1 conv-BN when the shape
    changes). Input ``[B, C_in, H, W]`` -> ``[B, C_out, H/stride, W/stride]``."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class CifarResNet32(nn.Module):
    """ResNet-32 for 32x32 images: ``[B, 3, 32, 32]`` (normalised) -> logits ``[B, C]``.

    Args:
        num_classes: 10 for CIFAR-10, 100 for CIFAR-100.
    """

    def __init__(self, num_classes: int = 10, blocks_per_stage: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        channels = 16
        for stage, (width, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            blocks = [BasicBlock(channels, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(blocks_per_stage - 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            channels = width
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def stage2_features(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the second stage, ``[B, 32, 16, 16]``."""
        return self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.stage2_features(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ResNet32Features(nn.Module):
    """Frozen feature extractor: flattened CIFAR pixels ``[B, 3072]`` in [0, 1]
    (channel-major, as ``g2g.data.datasets`` stores them) -> ``[B, 512]`` in [0, 1]
    (second stage, average-pooled to 4x4, flattened, then :func:`minmax_per_sample`).
    All parameters have ``requires_grad=False`` and the
    module stays in eval mode (BatchNorm uses its running statistics)."""

    def __init__(self, network: CifarResNet32) -> None:
        super().__init__()
        self.network = network.eval()
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> ResNet32Features:
        return super().train(False)  # frozen: never leave eval mode

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        images = (pixels.view(-1, 3, 32, 32) - self.mean) / self.std
        pooled = F.adaptive_avg_pool2d(self.network.stage2_features(images), 4)
        return minmax_per_sample(torch.flatten(pooled, 1))


def load_weights(weights: str, dataset: str) -> dict:
    """State dict of a CIFAR ResNet-32.

    Args:
        weights: ``hub`` (the public checkpoint for ``dataset`` through
            ``torch.hub.load_state_dict_from_url``, cached in torch.hub's folder) or
            the path of a saved state dict.
        dataset: ``cifar10`` or ``cifar100``.
    Raises:
        FeaturesUnavailableError: download impossible or file missing/unreadable.
    """
    if weights == "hub":
        # torch.hub downloads through a temporary name of its own; the lock only keeps
        # the jobs of a sweep from downloading the same file at once
        checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(HUB_WEIGHTS[dataset]).path).name
        lock_path = checkpoint.with_name(f".{checkpoint.name}.lock")
        lock = nullcontext() if checkpoint.exists() else preparation_lock(lock_path, f"the download of {checkpoint}")
        try:
            with lock:
                return torch.hub.load_state_dict_from_url(HUB_WEIGHTS[dataset], map_location="cpu",
                                                          check_hash=True, weights_only=True)
        except Exception as error:  # network errors come in many types
            out = Path(f"resnet32_{dataset}.pt").resolve()
            train = shell_command("python", "-m", "g2g.data.features", "train", "--dataset", dataset,
                                  "--root", "data", "--out", out)
            raise FeaturesUnavailableError(
                f"could not download the pretrained ResNet-32 for {dataset} ({error}). Without internet, train "
                f"one and point to it:\n  {train}\n  then add {shell_command(hydra_override('features.weights', out))}"
                " to the run's command line"
            ) from error
    path = Path(weights).expanduser()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise FeaturesUnavailableError(
            f"features.weights={weights!r} cannot be read ({error}); give the path of a state "
            "dict saved by 'python -m g2g.data.features train', or features.weights=hub"
        ) from error
    return state.get("state_dict", state)


def build_extractor(weights: str, dataset: str, num_classes: int) -> tuple[ResNet32Features, str]:
    """The frozen extractor and a short hash of its weights (for the cache key)."""
    state = load_weights(weights, dataset)
    network = CifarResNet32(num_classes)
    network.load_state_dict(state)  # strict: the architecture must match key for key
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].cpu().contiguous().numpy().tobytes())
    return ResNet32Features(network), digest.hexdigest()[:12]


def arithmetic_tag(device: torch.device) -> str:
    """What in the feature cache's name says how the features were computed: empty on the
    CPU (the names of every earlier cache), else ``_<device type>``, with ``-tf32`` when
    CUDA may use TF32 in convolutions or matmuls (``train.tf32``): other kernels, other
    roundings, other features."""
    if device.type == "cpu":
        return ""
    tf32 = device.type == "cuda" and (torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)
    return f"_{device.type}{'-tf32' if tf32 else ''}"


def _images_hash(pixels: torch.Tensor) -> str:
    return hashlib.sha256(pixels.cpu().contiguous().numpy().tobytes()).hexdigest()[:12]


def extract(
    extractor: ResNet32Features, pixels: torch.Tensor, batch_size: int = 500,
    cache_dir: Path | None = None, weights_hash: str = "",
) -> torch.Tensor:
    """Features of every image, ``[N, 3072]`` -> ``[N, 512]`` in [0, 1], on ``pixels``'
    device.

    With ``cache_dir`` the result is stored as
    ``resnet32_v<CACHE_VERSION>_<weights>_<images><arithmetic>.pt`` and reused by any
    later run with the same weights, images, feature version and arithmetic
    (:func:`arithmetic_tag`: CPU, CUDA, CUDA with TF32 convolutions; files of other
    versions are ignored, not read). The extractor always runs in float32, whatever
    ``train.precision`` (it is not under autocast). Jobs that share ``cache_dir`` compute each file once: the first
    holds ``.NAME.lock`` beside it while it computes and saves (atomically), the others
    wait for it and read the file.
    """
    def compute() -> torch.Tensor:
        model = extractor.to(pixels.device)
        return torch.cat([model(pixels[start:start + batch_size]) for start in range(0, len(pixels), batch_size)])

    if cache_dir is None:
        return compute()
    cache = Path(cache_dir) / (f"resnet32_v{CACHE_VERSION}_{weights_hash}_{_images_hash(pixels)}"
                               f"{arithmetic_tag(pixels.device)}.pt")
    computed: list[torch.Tensor] = []  # filled when this job computes them

    def compute_and_save() -> None:
        computed.append(compute())
        atomic_torch_save(computed[0].cpu(), cache)

    prepare_once(cache.with_name(f".{cache.name}.lock"), cache.exists, compute_and_save,
                 f"the ResNet-32 features {cache}")
    if computed:
        return computed[0]
    log.info("ResNet-32 features from cache %s", cache)
    return torch.load(cache, map_location=pixels.device, weights_only=True)


def resnet32_features(data, dataset: str, weights: str = "hub", batch_size: int = 500,
                      cache_dir: str | None = None):
    """The ``features=resnet32`` option (built ``_partial_`` from config, then called
    with the data): replace every split of a :class:`g2g.data.datasets.DataSplits` by
    its frozen ResNet-32 features ``[N, 512]``, each image's min-max normalised into
    [0, 1] (computed once, cached in ``cache_dir`` when given). ``features=raw`` builds nothing and leaves the pixels.

    Args:
        data: the splits, pixels ``[N, 3072]`` in [0, 1]; changed in place and returned.
        dataset: ``cifar10`` or ``cifar100`` (chooses the public weights).
        weights: ``hub`` or the path of a state dict.
        batch_size: images per extraction batch (does not change results).
        cache_dir: folder of the on-disk feature cache, or None.
    Raises:
        ValueError: a data set that is not CIFAR.
        FeaturesUnavailableError: the weights cannot be loaded.
    """
    if dataset not in HUB_WEIGHTS:
        raise ValueError(f"features=resnet32 needs CIFAR images; dataset={dataset!r} is not cifar10/cifar100")
    extractor, weights_hash = build_extractor(weights, dataset, data.num_classes)
    data.train_x = extract(extractor, data.train_x, batch_size, cache_dir, weights_hash)
    data.test_x = extract(extractor, data.test_x, batch_size, cache_dir, weights_hash)
    return data


def train_resnet32(
    dataset: str, root: str, out: Path, *, epochs: int = 30, batch_size: int = 128, lr: float = 0.1,
    seed: int = 0, device: str = "cpu", train_subset: int | None = None,
) -> dict:
    """Train a CIFAR ResNet-32 (SGD, momentum 0.9, weight decay 5e-4, cosine
    schedule, random crop + horizontal flip) and save its state dict to ``out``.
    Returns ``{"test_accuracy": ...}``."""
    from g2g.data.datasets import load_dataset

    torch.manual_seed(seed)
    data = load_dataset(dataset, root, download=True, train_subset=train_subset, seed=seed, device=device)
    network = CifarResNet32(data.num_classes).to(device)
    optimizer = torch.optim.SGD(network.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * math.ceil(len(data.train_y) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    mean = torch.tensor(CIFAR_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, device=device).view(1, 3, 1, 1)

    def normalise(pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.view(-1, 3, 32, 32) - mean) / std

    for epoch in range(1, epochs + 1):
        network.train()
        order = torch.randperm(len(data.train_y), device=device)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            images = F.pad(normalise(data.train_x[index]), (4, 4, 4, 4), mode="reflect")
            dx, dy = torch.randint(0, 9, (2,)).tolist()
            images = images[:, :, dy:dy + 32, dx:dx + 32]
            if torch.rand(()) < 0.5:
                images = images.flip(3)
            loss = F.cross_entropy(network(images), data.train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        network.eval()
        with torch.no_grad():
            correct = sum(int((network(normalise(data.test_x[s:s + 500])).argmax(1)
                               == data.test_y[s:s + 500]).sum()) for s in range(0, len(data.test_y), 500))
        accuracy = correct / len(data.test_y)
        log.info("ResNet-32 epoch %d/%d: loss %.4f test accuracy %.4f", epoch, epochs, loss.item(), accuracy)
    out = Path(out)
    atomic_torch_save(network.state_dict(), out)
    return {"test_accuracy": accuracy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m g2g.data.features",
                                     description="Train a CIFAR ResNet-32 for features.weights=PATH.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a ResNet-32 and save its state dict")
    train.add_argument("--dataset", choices=["cifar10", "cifar100"], default="cifar10")
    train.add_argument("--root", default="data", type=path_argument, help="data root (dataset.root)")
    train.add_argument("--out", type=path_argument, required=True, help="where to save the state dict")
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--lr", type=float, default=0.1)
    train.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    train.add_argument("--train-subset", type=int, default=None, help="train on N images (quick tries)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = train_resnet32(args.dataset, args.root, args.out, epochs=args.epochs, batch_size=args.batch_size,
                            lr=args.lr, device=args.device, train_subset=args.train_subset)
    print(f"saved {args.out} (test accuracy {result['test_accuracy']:.4f}); use "
          + shell_command(hydra_override("features.weights", args.out.resolve())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
