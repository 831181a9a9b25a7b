"""Data sets as whole tensors on the device (Fashion-MNIST, CIFAR-10/100, with the
Debian/IDX fallback), frozen ResNet-32 features for CIFAR, and cross-validation folds."""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "datasets": ["load_dataset", "DataSplits", "DATASETS", "DatasetUnavailableError"],
    "features": ["resnet32_features", "FeaturesUnavailableError"],
    "folds": ["stratified_folds"],
})
