"""Exporters: turn a trained model of one family into the files an app ships (Keras + TFLite)."""
