"""One module per command (pip's commands/): each adds its parser and runs its use cases."""
from imgclassify.cli.commands import emulate, examples, jobs, report, run, serve, status, undo, watch

COMMANDS = {module.NAME: module for module in (run, watch, serve, status, report, undo, jobs, examples, emulate)}
