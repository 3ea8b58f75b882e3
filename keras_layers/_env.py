"""Old name of `keras_layers.env`, kept only for the modules outside keras_layers/ and pipelines/ that
still import it (tests/pipelines, tests/integration); import `keras_layers.env` in new code."""
from keras_layers import env  # noqa: F401
