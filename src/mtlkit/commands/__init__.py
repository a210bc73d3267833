"""Subcommands of ``mtlkit`` that live in their own modules.

Every public module here defines ``register(commands)``, which adds its parser to the ``mtlkit`` subparsers
(``argparse._SubParsersAction``) and sets ``handler`` (a function of the parsed arguments returning the exit
status). ``mtlkit.cli`` discovers them; errors a user causes are raised as ``MtlkitError``.
"""
