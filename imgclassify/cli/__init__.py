"""The `imgclassify` command, as a package the way pip's is: main (the entry point and exit codes), options (shared
options), output (what the terminal shows), model and folder (what several commands set up), and one module per
command in commands/."""
from imgclassify.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
