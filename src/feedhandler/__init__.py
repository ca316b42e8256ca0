"""feedhandler: raw exchange packets to normalized ticks and order books, with a native core."""
from __future__ import annotations

import os

__version__ = "0.1.0"


def get_include() -> str:
    """Directory holding the C headers (``fh/record.h``, ``fh/ring.h``, ...) for code that embeds us.

    Pass it to your compiler (``include_dirs=[feedhandler.get_include()]``) next to the ``.pxd`` files
    that ``cimport feedhandler.includes.record`` finds on the package path.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(here, "include")
    if os.path.isdir(os.path.join(installed, "fh")):
        return installed
    # editable install from a checkout
    return os.path.abspath(os.path.join(here, "..", "..", "csrc", "include"))
