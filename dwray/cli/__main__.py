"""``python -m dwray.cli`` runs ``dw``."""
from dwray.cli import main

main()
