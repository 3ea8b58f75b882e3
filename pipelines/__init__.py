"""The jobs of the platform: data, recipes, train, tune, registry, export and the command line.

`python -m pipelines --help` lists the commands. Importing this package selects the Keras 2 API
(`TF_USE_LEGACY_KERAS=1`) before TensorFlow is imported.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
