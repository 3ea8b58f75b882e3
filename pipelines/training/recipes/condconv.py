"""CondConv models train with the standard recipe (Yang et al., CondConv, NeurIPS 2019, Sec. 4.1: the
paper adds no loss and no schedule of its own; its hyperparameters follow Kornblith et al. 2018, which the
text does not restate): cross-entropy with label smoothing, L2 and augmentation. This subclass only makes
it the default recipe of the CondConv models; the search over its regularization lives in
`tune_spaces/condconv.py`.

``preset="paper"`` leaves the loss as it is (plain cross-entropy, no extra regularization, as the
paper's ablations in Sec. 4.3 train): the paper's method is an architecture, selected with
``--model-config preset=paper`` (`keras_layers.models.condconv_mobilenet_v2`: CondConv in the last 6
blocks and the classifier, Sec. 4.1.2; `condconv_mobilenet_v1`: the last 8 separable blocks and the
classifier, Sec. 4.1.1). The paper's extra regularization for large models (dropout,
AutoAugment, Mixup alpha=0.2, Sec. 4.1) is not part of the preset: Mixup and AutoAugment are not
implemented here (`docs/papers.md`).
"""
import dataclasses

from pipelines.training.recipes import register
from pipelines.training.recipes.standard import Standard


@register
@dataclasses.dataclass
class CondConv(Standard):
    name = "condconv"
    models = ("condconv_mobilenet_v2", "condconv_mobilenet_v1")
    PAPER = {"label_smoothing": 0.0, "weight_decay": 0.0, "augment": 0.0}
