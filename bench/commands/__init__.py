"""One module per command, each with ``handle(args, command) -> int``.

``args`` is the parsed command line, ``command`` the line as typed (stamped on records and
reports). ``bench.cli`` imports only the module of the command given, so ``list`` and
``--help`` load nothing heavy.
"""
