"""Reports from MLflow: comparisons of configurations derived from what varies, sweep
reports and figures, the results page, training plots and the Markdown helpers they share."""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "queries": ["run_row", "sweep_jobs", "experiment_rows", "result_params"],
    "comparison": ["compare", "Comparison", "Configuration", "parse_selector", "headline"],
    "statistics": ["mean_std", "paired_difference"],
    "sweep_report": ["report_sweep"],
    "figures": ["metric_vs_param_figure", "accuracy_vs_cost_figure", "heatmap_figure"],
    "results_page": ["write_page"],
    "training_plots": ["learning_curves_figure", "mask_structure_figure", "dst_history_figure"],
})
