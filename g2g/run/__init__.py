"""One run from a composed config: validation, objects built from config, the
holdout and cross-validation protocols, checkpoints, resume, signals and locks."""
