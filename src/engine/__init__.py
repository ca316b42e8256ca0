"""engine: order books, matching engine and the exchange side of feedhandler."""
import os as _os
import sysconfig as _sysconfig
import warnings as _warnings

#: Pure-Python modules of the order-entry request path that the build also compiles with Cython (see
#: setup.py, COMPILED_PY). Where the compiled module exists it is the one Python imports.
COMPILED_PY = ("gateway/front", "gateway/pipeline", "gateway/state", "gateway/validation", "gateway/codec",
               "manager", "shards", "risk", "auth", "marketdata", "latency", "zmqio", "accounts",
               "gateway/balances")


def _warn_stale_builds() -> None:
    """In a source checkout an edited .py is shadowed by its older compiled module until the next build
    (``pip install -e .`` or ``python setup.py build_ext --inplace``): say so instead of silently running
    the old code. Installed copies are written within seconds of each other and never warn."""
    here = _os.path.dirname(__file__)
    suffix = _sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    stale = []
    for name in COMPILED_PY:
        try:
            so = _os.stat(_os.path.join(here, name + suffix)).st_mtime
            py = _os.stat(_os.path.join(here, name + ".py")).st_mtime
        except OSError:
            continue
        if py > so + 2.0:
            stale.append(name)
    if stale:
        _warnings.warn(f"engine: {', '.join(stale)}.py changed after the compiled module was built; Python "
                       "imports the old compiled code until you rebuild (pip install -e . or python setup.py "
                       "build_ext --inplace; FH_PURE_PYTHON=1 at build time skips compiling them)",
                       RuntimeWarning, stacklevel=2)


_warn_stale_builds()
