"""``python -m eoskeras`` runs the same command line as ``eoskeras``."""
from eoskeras.cli.main import main

main(prog_name="eoskeras")
