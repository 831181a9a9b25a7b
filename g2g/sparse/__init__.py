"""Sparse connectivity: G2G group labels and masks, masked linear layers, and dynamic
sparse training (prune and grow rules) that rewires the masks during training."""
