"""``python -m mrdkit`` = the ``mrd`` command."""

from mrdkit.cli.app import main

main()
