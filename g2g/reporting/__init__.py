"""Reports from MLflow: sweep tables and figures, the results page, training plots
and the Markdown helpers they share."""
