"""One plugin per model family for everything family-specific after training.

A family is a class with the interface of `Family`, decorated with `@register`, in a module of this
package (modules are discovered: a new family is one new file). Today: ``plain`` (the fallback: one
network, one stage), ``basisnet`` (preview + specialist, early termination), ``multi_exit`` (exits run
in order, the IMTA budgeted thresholds) and ``ds_net`` (front + gate, then the chosen width).

    families.family_of(net)            # the plugin whose `detect(net)` is true (else plain)
    families.get("multi_exit")         # by model.json "kind"
    families.kinds()                   # ("basisnet", "ds_net", "multi_exit", "plain")

Module-level imports here and in the plugins stay light (NumPy): the bundle runner
(`pipelines.export.bundle`) reads its policies from this registry and is imported without TensorFlow;
TensorFlow and keras_layers are imported inside the functions that convert or run Keras models.
"""
from __future__ import annotations

import abc
import importlib
import pkgutil

FAMILY_MODES = ("float32", "float16", "dynamic")  # what the staged (multi-stage) bundles convert in

_FAMILIES: dict = {}
_LOADED = False


class Family(abc.ABC):
    """The interface of a family plugin (subclass it; one instance is registered per class).

    kind             model.json "kind" of its bundles
    fallback         True for the family a model is when no other family detects it (plain)
    modes            the quantization modes its bundle converts in
    """

    kind: str = ""
    fallback = False
    modes = FAMILY_MODES

    @abc.abstractmethod
    def detect(self, net):
        """Whether the Keras model `net` is of this family (read off the model itself)."""

    @staticmethod
    def output_names(net):
        """The names of a dict-output model's outputs (empty for a single-output model)."""
        return set(net.output_shape) if isinstance(net.output_shape, dict) else set()

    def check_mode(self, net, mode):
        """Refuse a mode before any work: a layer that declares it cannot run `mode` is named first
        (`tflite.check_quantization`), else this family's limit."""
        from pipelines.export import tflite

        tflite.check_quantization(net, mode)
        if mode not in self.modes:
            raise tflite.ConversionError(f"quantize={mode!r} is not supported for a {self.kind} bundle "
                                         f"({net.name!r}); it supports: {', '.join(self.modes)}")

    # the ExportOptions fields that choose this family's policy; a family refuses the others' (given, they
    # would be silently ignored)
    policy_options = ()

    def check_options(self, options):
        """Refuse, before any work, a policy option of another family (e.g. a BasisNet `threshold` for a
        multi-exit model): one-line ValueError naming the field."""
        for name in ("threshold", "exit_thresholds"):
            value = getattr(options, name, None)
            if value is not None and name not in self.policy_options:
                raise ValueError(f"{name}={value!r} does not apply to a {self.kind} bundle "
                                 f"(it takes: {', '.join(self.policy_options) or 'no policy options'})")

    def selects(self, options):
        """Whether `stages` chooses something (thresholds) on the validation images given `options`."""
        return False

    @abc.abstractmethod
    def stages(self, net, mode, selection, options, log):
        """Convert `net` into its bundle pieces: (`Conversion` of model.tflite, {other file: bytes},
        the model.json fields of this kind: "kind", "stages", thresholds, ...). `selection=(images, labels)`
        are the validation images thresholds are chosen on; `options` an `export.ExportOptions`."""

    def default_stages(self):
        """model.json "stages" when a bundle of this kind gives none."""
        return {}

    def validate_spec(self, spec, stages):
        """Check (and normalise) the model.json fields of this kind; one-line `BundleError` naming the field."""

    @abc.abstractmethod
    def run_policy(self, bundle, image):
        """Run one image (1, H, W, C) through `bundle` (a `bundle.Bundle`) as the phone does:
        (stage that answered, its logits, the stages run in order)."""

    @abc.abstractmethod
    def keras_policy(self, net, spec, images):
        """The Keras model's answer under the bundle's policy: (stage answering each image, its logits)."""

    def checks(self, net, bundle, images, labels, options, log):
        """(parity, latency) of the written bundle against `net`: the whole policy, as the phone runs it."""
        from pipelines.export.checks import bundle_latency, bundle_parity

        par = bundle_parity(net, bundle, images, labels)
        log(f"{self.kind} bundle parity on {par['images']} validation images: top-1 agreement "
            f"{par['agreement']:.4f}, same stage {par['stage_agreement']:.4f}, max abs error "
            f"{par['max_abs_error']:.3g}; stopped at {par['stopped_at']}")
        lat = bundle_latency(bundle, images, runs=options.latency_runs)
        log(f"latency (whole policy): median {lat['median_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms")
        return par, lat


def register(cls):
    """Class decorator: register one instance of the `Family` subclass `cls` under `cls.kind`."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"family class {cls.__name__} needs a kind; received kind={kind!r}")
    if kind in _FAMILIES and type(_FAMILIES[kind]) is not cls:
        raise ValueError(f"family kind={kind!r} is registered twice")
    _FAMILIES[kind] = cls()
    return cls


def _load_all():
    """Import every module of this package (not starting with "_"): importing one registers its family.
    (`keras_layers.discovery` does the same for models and recipes, but importing it loads TensorFlow.)"""
    global _LOADED
    if not _LOADED:
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True


def kinds():
    _load_all()
    return tuple(sorted(_FAMILIES))


def get(kind):
    _load_all()
    if kind not in _FAMILIES:
        raise ValueError(f"unknown family kind={kind!r}; valid: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[kind]


def family_of(net):
    """The plugin of `net`: the one family whose `detect` is true; the fallback (plain) when none is.
    A model two families claim is refused rather than decided by registration order."""
    _load_all()
    found = [f for _, f in sorted(_FAMILIES.items()) if not f.fallback and f.detect(net)]
    if len(found) > 1:
        raise ValueError(f"model {net.name!r} is detected as several families: {', '.join(f.kind for f in found)}")
    if found:
        return found[0]
    fallback = [f for _, f in sorted(_FAMILIES.items()) if f.fallback and f.detect(net)]
    if not fallback:
        raise ValueError(f"model {net.name!r} is of no registered family ({', '.join(sorted(_FAMILIES))})")
    return fallback[0]
