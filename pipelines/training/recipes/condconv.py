"""CondConv models train with the standard recipe (Yang et al., CondConv, NeurIPS 2019, Sec. 4.1: the
paper adds no loss and no schedule of its own; its hyperparameters follow Kornblith et al. 2018, which the
text does not restate): cross-entropy with label smoothing, L2 and augmentation, plus one project addition,
the router warm-up. The search over its regularization lives in `tune_spaces/condconv.py`.

Router warm-up (``router_warmup``, a fraction of the epochs; project addition, not in the paper): the
routers (every `CondRouting`, the blocks' shared ones and the layers' own) are not trained during the first
``round(router_warmup * epochs)`` epochs, then train with the rest. Their kernels start at zero
(`keras_layers.condconv.CondRouting`), so until then every example gets the same routing weights (0.5 each,
sigmoid) and the network trains as its static self with the experts averaged. Measured on cluttered-digits
(docs/results.md "CondConv on cluttered-digits"): without it the routers scale some examples' kernels
towards 0 before the features carry signal - the quickest way to the class prior, loss ln 10 - and the
network never leaves chance, frozen random routers included; with two frozen epochs of five it learns
(E = 1: 76% validation at epoch 5).

``preset="paper"`` leaves the loss as it is (plain cross-entropy, no extra regularization, as the
paper's ablations in Sec. 4.3 train) and has no router warm-up: the paper's method is an architecture,
selected with ``--model-config preset=paper`` (`keras_layers.models.condconv_mobilenet_v2`: CondConv in the
last 6 blocks and the classifier, Sec. 4.1.2; `condconv_mobilenet_v1`: the last 8 separable blocks and the
classifier, Sec. 4.1.1). The paper's extra regularization for large models (dropout,
AutoAugment, Mixup alpha=0.2, Sec. 4.1) is not part of the preset: Mixup is any recipe's ``mixup`` field
(``--recipe-config mixup=0.2``), AutoAugment is not implemented (`docs/papers.md`).
"""
import dataclasses

from keras_layers import env  # noqa: F401

from keras_layers.condconv import CondRouting
from pipelines.training.recipes import register
from pipelines.training.recipes.base import StageSwitch, check_range
from pipelines.training.recipes.standard import Standard


def router_variables(net):
    """The trainable variables of every `CondRouting` in `net` (block routers and layers' own)."""
    return [v for m in net.submodules if isinstance(m, CondRouting) for v in m.trainable_variables]


@register
@dataclasses.dataclass
class CondConv(Standard):
    name = "condconv"
    models = ("condconv_mobilenet_v2", "condconv_mobilenet_v1", "condconv_mobilenet_v3")
    PAPER = {"label_smoothing": 0.0, "weight_decay": 0.0, "augment": 0.0, "router_warmup": 0.0}

    router_warmup: float = 0.2  # fraction of the epochs with the routers not trained (project addition)

    def validate(self):
        super().validate()
        check_range("router_warmup", self.router_warmup, 0.0, 0.9)

    def setup(self, model):
        self.routers_frozen = False

    def warmup_epochs(self, epochs):
        return int(round(self.router_warmup * epochs))

    def trainable_variables(self, model):
        variables = model.net.trainable_variables
        if not self.routers_frozen:
            return variables
        frozen = {v.ref() for v in router_variables(model.net)}
        return [v for v in variables if v.ref() not in frozen]

    def optimizer_variables(self, model):
        return model.net.trainable_variables

    def callbacks(self, model, steps_per_epoch, epochs, train_data=None):
        warmup = self.warmup_epochs(epochs)
        if not warmup or not router_variables(model.net):
            return []

        def switch(epoch):  # the train step is traced again with the other variables
            frozen = epoch < warmup
            if frozen == self.routers_frozen:
                return None
            self.routers_frozen = frozen
            return "" if frozen else f"condconv: routers train from epoch {epoch + 1}"

        return [StageSwitch(model, switch)]
