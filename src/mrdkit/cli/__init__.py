"""The ``mrd`` command line (typer): ``app`` (entry point, ``ls``, ``data inspect``), ``options`` (what several
commands share), and one module per command group: ``score``, ``unlearn``, ``evaluate`` (``eval`` and
``difficulty``), ``bench`` (``bench``, ``demo``, ``testbed``). Each command parses, calls one library function and
prints a summary; torch is imported inside the commands, so ``mrd --help`` stays instant.
"""
