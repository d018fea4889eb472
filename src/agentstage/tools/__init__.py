"""Tools: the built-ins and the registry that names them ``name:version``."""
