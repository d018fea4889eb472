"""The doors: each calls the run service and nothing below it."""
