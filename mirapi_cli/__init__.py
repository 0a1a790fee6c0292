"""The `mirapi` command-line tool."""
