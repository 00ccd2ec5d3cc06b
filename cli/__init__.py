"""The eoskeras command line (installed as ``eoskeras.cli``)."""
