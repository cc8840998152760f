"""The phantom world's configs (a package, so that Hydra finds them with ``pkg://``)."""
