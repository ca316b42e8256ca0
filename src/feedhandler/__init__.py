"""feedhandler: raw exchange packets to normalized ticks and order books, with a native core."""
from os import path as _path

__version__ = "0.1.0"
__all__ = ["__version__", "get_include"]


def get_include() -> str:
    """Directory holding the C headers (``fh/record.h``, ``fh/ring.h``, ...) for code that embeds us.

    Pass it to your compiler (``include_dirs=[feedhandler.get_include()]``) next to the ``.pxd`` files
    that ``cimport feedhandler.includes.record`` finds on the package path.
    """
    here = _path.dirname(_path.abspath(__file__))
    installed = _path.join(here, "include")
    if _path.isdir(_path.join(installed, "fh")):
        return installed
    # editable install from a checkout
    return _path.abspath(_path.join(here, "..", "..", "csrc", "include"))
