"""MLOps (above export): the model registry (`registry`), gated promotion with
history and rollback (`promotions`), exporting a registered model to an Android bundle attached to its
version (`release`), and the MLflow TFLite flavour that serves a bundle (`tflite_flavor`)."""
