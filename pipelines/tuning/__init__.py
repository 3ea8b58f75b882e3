"""Tuning: Ray Tune searches of a family's recipe (`tune`), their MLflow logging (`tracking`) and the
checks of a search space against the training config (`spaces`). Search spaces themselves are data in
the top-level `tune_spaces/` package."""
