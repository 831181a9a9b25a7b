"""Draw the figures of docs/connectivity.md from the real mask code.

    python docs/make_figures.py        # writes docs/figures/groupings.png
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from g2g.sparse.connectivity import layer_connectivity, layer_grouping

SIZES = [64, 48, 48, 10]  # small layers so single connections are visible; 8 groups


def main() -> None:
    models = ("index", "random", "mixer")
    figure, axes = plt.subplots(len(models), 3, figsize=(10, 9.5))
    for row, model in enumerate(models):
        layers = layer_connectivity(SIZES, model, num_groups=8, p_intra=1.0, p_inter=0.15, seed=42)
        for column, layer in enumerate(layers):
            axis = axes[row, column]
            axis.imshow(layer.mask.numpy(), cmap="Greys", interpolation="nearest", aspect="auto")
            axis.set_title(f"{model}: fc{column + 1} ({layer_grouping(model, column)})", fontsize=10)
            axis.set_xlabel("input neuron")
            axis.set_ylabel("output neuron")
    figure.suptitle("G2G masks (black = connection), 8 groups, p_intra 1.0, p_inter 0.15, seed 42")
    figure.tight_layout()
    out = Path(__file__).parent / "figures" / "groupings.png"
    out.parent.mkdir(exist_ok=True)
    figure.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
