"""Data sets as whole tensors on the device (Fashion-MNIST, CIFAR-10/100, with the
Debian/IDX fallback), frozen ResNet-32 features for CIFAR, and cross-validation folds."""
