"""The command line, at the top of the rooms: `main` parses and runs one command.

`parser` holds every command's flags and the settings they make; each command is a
module of its own (`serve`, `controller`, `certs`, `audit`, `enrich`, `checks`,
`rules`) with a `run(args)`, imported only when it runs.
"""
