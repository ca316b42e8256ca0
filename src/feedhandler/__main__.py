"""``python -m feedhandler ...``: the same command line as the ``feedhandler`` script."""
import sys

from feedhandler.cli import main

sys.exit(main())
