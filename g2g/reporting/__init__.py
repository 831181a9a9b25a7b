"""Reports from MLflow: sweep tables and figures, the results page, training plots
and the Markdown helpers they share."""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "queries": ["run_row", "sweep_jobs", "experiment_rows", "group_by_configuration", "refuse_mixed_settings"],
    "statistics": ["mean_std", "paired_difference"],
    "sweep_report": ["report_sweep"],
    "results_page": ["write_page"],
    "training_plots": ["learning_curves_figure", "mask_structure_figure", "dst_history_figure"],
})
