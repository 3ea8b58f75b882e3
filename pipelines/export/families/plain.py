"""Plain: any model as one network, one stage (the fallback when no dynamic family detects the model).

Converted in every quantization mode (`pipelines.export.convert`: int8 calibrated and QAT fine-tuned on
the train split); checked as one network: parity over every output against the Keras model and the
latency of one LiteRT invocation.
"""
from __future__ import annotations

from pipelines.export.convert import MODES
from pipelines.export.families import Family, register
from pipelines.export.policy import RULE, need


@register
class Plain(Family):
    kind = "plain"
    policy_options = ("exit_thresholds",)  # written into model.json for an app that runs its own exits
    fallback = True
    modes = MODES

    def detect(self, net):
        return True  # any Keras model runs as one network

    def stages(self, net, mode, selection, options, log):
        from pipelines.export.convert import convert

        conv = convert(net, mode, data=options.data_source, calibration_images=options.calibration_images,
                       qat_epochs=options.qat_epochs, qat_limit=options.qat_limit,
                       main_output=options.main_output, log=log)
        main = {"file": "model.tflite"}
        if len(net.outputs) > 1:
            main["logits"] = options.main_output
        spec = {"kind": self.kind, "stages": {"main": main}}
        if options.exit_thresholds:  # given for the app's own early exit; the runner answers with "main"
            spec["early_exit"] = {"thresholds": {str(k): None if v is None else float(v)
                                                for k, v in dict(options.exit_thresholds).items()},
                                  "rule": RULE}
        return conv, {}, spec

    def default_stages(self):
        return {"main": {"file": "model.tflite"}}

    def validate_spec(self, spec, stages):
        need(len(stages) == 1, f"model.json: a plain bundle has one stage; received stages={sorted(stages)}")

    def run_policy(self, bundle, image):
        name = next(iter(bundle.spec["stages"]))
        return name, bundle.logits(name, image, {}), [name]

    def keras_policy(self, net, spec, images):
        import numpy as np

        from pipelines.export.checks import keras_outputs, main_logits

        name = next(iter(spec["stages"]))
        logits = main_logits(keras_outputs(net, images), spec["stages"][name].get("logits") or "logits")
        return np.full(len(images), name), logits

    def checks(self, net, bundle, images, labels, options, log):
        from pipelines.export.checks import latency, parity

        data = (bundle.dir / bundle.spec["stages"][next(iter(bundle.spec["stages"]))]["file"]).read_bytes()
        par = parity(net, data, images, labels, main_output=options.main_output, threads=options.threads)
        log(f"parity on {par['images']} validation images: top-1 agreement {par['agreement']:.4f}, "
            f"max abs error {par['max_abs_error']:.3g}; accuracy keras {par['keras_accuracy']:.4f} "
            f"tflite {par['tflite_accuracy']:.4f}")
        lat = latency(data, threads=options.threads, runs=options.latency_runs, example=images[:1])
        log(f"latency: median {lat['median_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms ({options.threads} thread(s), "
            f"XNNPACK)")
        return par, lat
