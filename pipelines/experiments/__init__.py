"""The papers' experiments, each a `python -m pipelines` command: `basisnet` (basisnet-eval),
`multi_exit` (multi-exit-eval), `slimmable` (slimmable-eval). They compose training and the family
policies; nothing below them imports them."""
