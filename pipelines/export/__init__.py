"""Export to TFLite for Android: conversion, checks, the bundle, the report, one plugin per dynamic family.

    from pipelines import export
    conv = export.convert(net, "dynamic")                          # -> Conversion (bytes, float ops, notes)
    export.parity(net, conv.tflite, images, labels)                # top-1 agreement, max abs error, accuracy
    export.latency(conv.tflite, threads=1)                         # LiteRT + XNNPACK, batch 1
    export.export_net(net, "bundle/", export.ExportOptions(quantize="dynamic"), dataset, (images, labels))

Modules: `api` (`ExportOptions`, `export_net`: any model -> its bundle, checked), `tflite` (the converter
and a LiteRT runner), `convert` (quantization modes, QAT), `checks` (parity, latency, of a model or of a
staged bundle), `bundle` (model.json writer and the runner the phone mirrors), `policy` (the early-exit
rule), `report` (ops, delegation, dtypes), `families` (one plugin per family: detection, stages,
model.json fields, the runner's policy, the Keras reference policy). Nothing here talks to MLflow:
exporting a registered model and attaching the bundle to its version is
`pipelines.mlops.release.export_model`.
"""
from pipelines.export.api import ExportOptions, export_net  # noqa: F401
from pipelines.export.bundle import BUNDLE_FILES, bundle_files, model_json, write_bundle  # noqa: F401
from pipelines.export.checks import latency, main_logits, main_output_name, parity  # noqa: F401
from pipelines.export.convert import (DEFAULT_MAX_ERROR, MODES, QUANTIZE_SEMANTICS, Conversion,  # noqa: F401
                                      check_mode, convert, float_ops, quantize_aware)
