"""Figures logged with every run: learning curves, G2G mask structure, DST history."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from g2g.sparse.layers import MaskedLinear


def learning_curves_figure(history: list[dict]) -> plt.Figure:
    """Loss and accuracy per epoch from the per-epoch metric dicts in ``history``."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, keys, title, label in (
        (loss_axis, ("train_loss", "test_loss", "val_loss"), "Loss", "cross-entropy on spike counts"),
        (accuracy_axis, ("train_accuracy", "test_accuracy", "val_accuracy"), "Accuracy", "accuracy"),
    ):
        for key in keys:
            if key in history[0]:
                axis.plot(epochs, [row[key] for row in history], marker="o", label=key)
        axis.set(xlabel="epoch", ylabel=label, title=title)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return figure


def group_block_density(layer: MaskedLinear) -> torch.Tensor:
    """Density of the mask between every (output group, input group) pair, ``[G, G]``."""
    num_groups = int(max(layer.in_groups.max(), layer.out_groups.max())) + 1
    out_onehot = torch.nn.functional.one_hot(layer.out_groups, num_groups).float()  # [N_out, G]
    in_onehot = torch.nn.functional.one_hot(layer.in_groups, num_groups).float()  # [N_in, G]
    connections = out_onehot.T @ layer.mask.float() @ in_onehot
    pairs = out_onehot.sum(0)[:, None] * in_onehot.sum(0)[None, :]
    return (connections / pairs.clamp_min(1)).cpu()


def mask_structure_figure(layers: dict[str, MaskedLinear]) -> plt.Figure:
    """One heatmap per masked layer: connection density between output group (rows)
    and input group (columns). G2G structure shows as a bright diagonal."""
    figure, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.8), squeeze=False)
    for axis, (name, layer) in zip(axes[0], layers.items()):
        image = axis.imshow(group_block_density(layer).numpy(), vmin=0, vmax=1, cmap="viridis")
        axis.set(title=f"{name}: density {layer.density():.3f}", xlabel="input group",
                 ylabel="output group")
        figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    return figure


def dst_history_figure(records: list[dict]) -> plt.Figure:
    """Intra- and inter-group density and the inter-group share of grown connections,
    per layer, over the DST updates. ``records`` are :class:`g2g.sparse.dst.UpdateRecord` dicts."""
    layers = sorted({record["layer"] for record in records})
    figure, (density_axis, grown_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for layer in layers:
        rows = [r for r in records if r["layer"] == layer]
        steps = [r["step"] for r in rows]
        line, = density_axis.plot(steps, [r["density_intra"] for r in rows], label=f"{layer} intra")
        density_axis.plot(steps, [r["density_inter"] for r in rows], linestyle="--",
                          color=line.get_color(), label=f"{layer} inter")
        grown_axis.plot(steps, [r["grown_inter_fraction"] for r in rows], label=layer)
    density_axis.set(xlabel="optimizer step", ylabel="density", title="Density inside / between groups")
    grown_axis.set(xlabel="optimizer step", ylabel="fraction", title="Grown connections that are inter-group")
    for axis in (density_axis, grown_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
