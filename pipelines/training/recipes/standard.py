"""The standard recipe: cross-entropy (+ label smoothing, L2, augmentation) for single-output models.

``preset="paper"`` changes nothing here (the baselines' papers add no loss); the field exists so every
recipe accepts ``--recipe-config preset=paper`` (`pipelines.training.recipes.resolve`)."""
import dataclasses

from pipelines.training.recipes import check_preset, register
from pipelines.training.recipes.base import Recipe


@register
@dataclasses.dataclass
class Standard(Recipe):
    name = "standard"
    models = ("mobilenet_v2",)
    PAPER = {}

    preset: str = "default"  # "default" | "paper" (resolved by recipes.get)

    def validate(self):
        super().validate()
        check_preset(self.preset)
