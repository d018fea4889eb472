"""The ``agent`` command line."""
