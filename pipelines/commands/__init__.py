"""One module per command of `python -m pipelines`; each defines `NAME`, `HELP`, `add_arguments(parser)`
and `run(args) -> int`. Modules are discovered automatically, so a new command is a new file."""
