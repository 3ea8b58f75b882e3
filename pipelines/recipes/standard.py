"""The standard recipe: cross-entropy (+ label smoothing, L2, augmentation) for single-output models."""
from pipelines.recipes import register
from pipelines.recipes.base import Recipe


@register
class Standard(Recipe):
    name = "standard"
    models = ("mobilenet_v2",)
