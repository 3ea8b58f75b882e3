"""The standard recipe: cross-entropy (+ label smoothing, L2, augmentation) for single-output models."""
from pipelines.training.recipes import register
from pipelines.training.recipes.base import Recipe


@register
class Standard(Recipe):
    name = "standard"
    models = ("mobilenet_v2",)
