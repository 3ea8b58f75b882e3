"""List the registered architectures with their MAdds and parameters at an input size.

    python -m pipelines models --image-size 32 --channels 3
"""
NAME = "models"
HELP = "list registered models with MAdds and params"


CHANNELS = (1, 3)  # grayscale or RGB: what the datasets and the bundle's image reader give


def add_arguments(p):
    p.add_argument("--image-size", type=int, default=32, help="input height and width, >= 8 (default 32)")
    p.add_argument("--channels", type=int, default=3, help="input channels: 1 (grayscale) or 3 (RGB) (default 3)")
    p.add_argument("--num-classes", type=int, default=10, help="classes of the head, >= 2 (default 10)")


def check(args):
    """Refuse a bad flag before any model is built (one line naming it)."""
    if args.channels not in CHANNELS:
        raise ValueError(f"--channels must be 1 (grayscale) or 3 (RGB); received channels={args.channels}")
    if args.image_size < 8:
        raise ValueError(f"--image-size must be >= 8; received image_size={args.image_size}")
    if args.num_classes < 2:
        raise ValueError(f"--num-classes must be >= 2; received num_classes={args.num_classes}")


def run(args):
    check(args)
    from keras_layers import count_madds, models

    shape = (args.image_size, args.image_size, args.channels)
    print(f"{'model':28s} {'MAdds (M)':>10s} {'params (K)':>11s}  config fields")
    for name in models.names():
        net = models.build(name, input_shape=shape, num_classes=args.num_classes)
        fields = ", ".join(f"{k}={v!r}" for k, v in models.config_fields(name).items())
        print(f"{name:28s} {count_madds(net, shape) / 1e6:10.2f} {net.count_params() / 1e3:11.1f}  {fields}")
    return 0
