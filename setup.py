"""Build the native modules. Metadata lives in pyproject.toml; this file only cythonizes.

Every ``src/**/*.pyx`` becomes one extension module. A module names the C sources it needs from
``csrc/`` with a ``# distutils: sources = ...`` line at its top, so adding a module never means
editing this file.

Environment switches (developer use):
  FH_SANITIZE=1        build with -fsanitize=address,undefined (run under LD_PRELOAD of libasan)
  FH_DEBUG=1           -O0 -g instead of -O3
  FH_BUILD_ONLY=a,b    only cythonize modules whose dotted name starts with one of these prefixes
"""
import glob
import os
import shutil
import subprocess
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC_INCLUDE = os.path.join("csrc", "include")
# Installed copy of the C headers, so that user code can compile against feedhandler.get_include().
PKG_INCLUDE = os.path.join("src", "feedhandler", "include")


def copy_headers():
    dst = os.path.join(HERE, PKG_INCLUDE, "fh")
    os.makedirs(dst, exist_ok=True)
    for h in glob.glob(os.path.join(HERE, CSRC_INCLUDE, "fh", "*.h")):
        shutil.copy2(h, dst)


def pkg_config_ok(*names):
    """True when pkg-config knows every library named (the optional native capture paths)."""
    try:
        return subprocess.run(["pkg-config", "--exists", *names], capture_output=True).returncode == 0
    except OSError:
        return False


LIVE = os.path.join("src", "feedhandler", "capture", "live")
# Optional cffi modules, built only where their system library exists; without them the package
# installs and works, and `feedhandler doctor` says what is missing.
CFFI_MODULES = []
if pkg_config_ok("libxdp", "libbpf"):
    CFFI_MODULES.append(LIVE + "/_afxdp_build.py:ffibuilder")
if pkg_config_ok("libdpdk"):
    CFFI_MODULES.append(LIVE + "/_dpdk_build.py:ffibuilder")


def compile_xdp_program():
    """Compile the XDP filter program (csrc/bpf) next to the AF_XDP module when clang exists."""
    if not (shutil.which("clang") and pkg_config_ok("libxdp", "libbpf")):
        return
    sys.path.insert(0, os.path.join(HERE, LIVE))
    try:
        from _afxdp_build import compile_bpf

        compile_bpf(os.path.join(HERE, LIVE))
    except (subprocess.CalledProcessError, OSError) as e:  # AF_XDP then falls back to libxdp's default program
        print(f"warning: could not compile the XDP program: {e}", file=sys.stderr)
    finally:
        sys.path.pop(0)


class BuildPyWithHeaders(build_py):
    def run(self):
        copy_headers()
        compile_xdp_program()
        super().run()


def cflags():
    flags = ["-std=gnu11", "-Wno-unused-function", "-Wno-unreachable-code", "-pthread"]
    if os.environ.get("FH_DEBUG"):
        flags += ["-O0", "-g"]
    else:
        flags += ["-O3", "-g0"]
    if os.environ.get("FH_MARCH"):
        flags += ["-march=" + os.environ["FH_MARCH"]]
    if os.environ.get("FH_SANITIZE"):
        flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    return flags


def ldflags():
    flags = ["-pthread"]
    if os.environ.get("FH_SANITIZE"):
        flags += ["-fsanitize=address,undefined"]
    return flags


def compiled_py():
    """Pure-Python modules of the order-entry request path that are also compiled by Cython: the tuple
    ``COMPILED_PY`` of src/engine/__init__.py (read, not imported). The .py stays the source and the
    fallback; the extension module shadows it once built. See bench/README.md, gateway section."""
    import ast

    with open(os.path.join(HERE, "src", "engine", "__init__.py")) as f:
        for node in ast.parse(f.read()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "COMPILED_PY" for t in node.targets):
                return [os.path.join("src", "engine", name + ".py") for name in ast.literal_eval(node.value)]
    raise RuntimeError("src/engine/__init__.py defines no COMPILED_PY")


def extensions(sources):
    only = [p for p in os.environ.get("FH_BUILD_ONLY", "").split(",") if p]
    exts = []
    for pyx in sources:
        rel = os.path.relpath(pyx, "src")
        name = os.path.splitext(rel)[0].replace(os.sep, ".")
        if only and not any(name.startswith(p) for p in only):
            continue
        exts.append(
            Extension(
                name,
                [pyx],
                include_dirs=[CSRC_INCLUDE, "csrc"],
                extra_compile_args=cflags(),
                extra_link_args=ldflags(),
                libraries=["z"],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            )
        )
    return exts


NATIVE_DIRECTIVES = {       # .pyx: C semantics where the code asks for them
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
}
PY_DIRECTIVES = {           # compiled .py: exactly Python's semantics (negative indices, ZeroDivisionError,
    "language_level": 3,    # annotations are documentation, not C types or runtime checks)
    "annotation_typing": False,
    "binding": True,
    "embedsignature": True,
}

copy_headers()
_jobs = int(os.environ.get("FH_CYTHON_JOBS", "0")) or None
_ext_modules = cythonize(extensions(sorted(glob.glob(os.path.join("src", "**", "*.pyx"), recursive=True))),
                         include_path=["src", CSRC_INCLUDE], compiler_directives=NATIVE_DIRECTIVES, nthreads=_jobs)
if not os.environ.get("FH_PURE_PYTHON"):
    _ext_modules += cythonize(extensions(compiled_py()),
                              include_path=["src"], compiler_directives=PY_DIRECTIVES, nthreads=_jobs)
setup(
    ext_modules=_ext_modules,
    cmdclass={"build_py": BuildPyWithHeaders},
    cffi_modules=CFFI_MODULES,
)
