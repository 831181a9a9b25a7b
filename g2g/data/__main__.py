"""``python -m g2g.data [fashionmnist|cifar10|cifar100] [--root data]``."""

from g2g.data.datasets import main

raise SystemExit(main())
