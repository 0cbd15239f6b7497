"""llama.cpp's CPU backend when it is built as loadable libraries (the engine image), and
whether it runs AMX kernels (``amx_in_use``).

A portable build (``GGML_NATIVE=OFF GGML_BACKEND_DL=ON GGML_CPU_ALL_VARIANTS=ON``) links no CPU
backend: it installs one library per instruction-set level (``libggml-cpu-haswell.so``, ...)
beside ``libggml.so`` and ggml loads the best one the CPU runs when asked to, which
llama-cpp-python does not do itself. ``load_backends`` asks, once, before the first model
loads; with a build whose CPU backend is linked in (the default) there is nothing to do.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

# Module-level on purpose: llama.cpp's backend registry is process-global native state
# (allowed in tests/unit/test_module_state.py).
_lock = threading.Lock()


def backend_dir() -> Path:
    """Where llama-cpp-python keeps llama.cpp's libraries (and a portable build's backends)."""
    from llama_cpp import _ggml

    return Path(_ggml.libggml_base_path)


def load_backends() -> int:
    """Load the dynamic backends if none is registered yet; the number registered after."""
    from llama_cpp import _ggml

    lib = _ggml.libggml
    lib.ggml_backend_reg_count.argtypes = []
    lib.ggml_backend_reg_count.restype = ctypes.c_size_t
    with _lock:
        if lib.ggml_backend_reg_count() == 0:
            lib.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
            lib.ggml_backend_load_all_from_path.restype = None
            lib.ggml_backend_load_all_from_path(str(backend_dir()).encode())
        count: int = lib.ggml_backend_reg_count()
    return count


def amx_in_use() -> bool:
    """Whether llama.cpp's CPU backend runs AMX kernels here (built with them, which a build
    only does for, or a portable build only loads on, a CPU that has AMX)."""
    import llama_cpp

    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()
