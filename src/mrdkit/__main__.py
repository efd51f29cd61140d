"""``python -m mrdkit`` = the ``mrd`` command."""

from mrdkit.cli import main

main()
