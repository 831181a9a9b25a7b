"""Sparse connectivity: G2G group labels and masks, masked linear layers, and dynamic
sparse training (prune and grow rules) that rewires the masks during training."""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "connectivity": ["LayerConnectivity", "layer_connectivity", "group_labels", "g2g_mask"],
    "layers": ["MaskedLinear", "SPIKE_MATMUL_MODES"],
    "dst.core": ["DynamicSparsity"],
    "dst.hebbian": ["HebbianTrace", "HEBBIAN_SCORES"],
    "dst.rules": ["PRUNE_RULES", "GROW_RULES", "GROW_INITS"],
    "dst.schedule": ["FRACTION_SCHEDULES"],
})
