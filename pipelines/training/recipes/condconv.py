"""CondConv models train with the standard recipe (the paper adds no loss): cross-entropy with label
smoothing, L2 and augmentation. This subclass only makes it the default recipe of the CondConv models;
the search over its regularization lives in `tune_spaces/condconv.py`."""
from pipelines.training.recipes import register
from pipelines.training.recipes.standard import Standard


@register
class CondConv(Standard):
    name = "condconv"
    models = ("condconv_mobilenet_v2",)
