"""Float32 products for the few rows of a CPU decode step, compiled from ``few_rows.c`` on first use.

``linear(x, w)`` is ``F.linear`` without bias; ``moe(...)`` runs a few tokens' chosen SwiGLU experts
and mixes them by their router weights, in one call.

Why: a decode step multiplies 1-32 rows by every weight, so it runs at the speed the weights are
read from memory. On a 2-core AMD EPYC (AVX2) the products torch calls (MKL, oneDNN) read a weight
at 3-8 GB/s for 2-8 rows; ``few_rows.c`` reads it once, in order, at 10-16 GB/s (figures in
``benchmarks/decode_vs_hf.py``). It computes exactly ``F.linear(x, w)`` up to float32 summation
order.

How: the C file is compiled with the system C compiler (``$CC``, else ``cc``/``gcc``/``clang``),
``-O3 -march=native -fopenmp``, into ``$SMALLCODE_CACHE_DIR`` (default ``~/.cache/smallcode``),
named by a hash of the source, the compiler, the flags and the CPU, and loaded with ctypes, which
lets go of the GIL during the call. This is how torch's own Inductor builds its CPU code: at run
time, for the machine it runs on. The build is written to a temporary file and renamed into place,
so processes racing to build never load half a library. Without a compiler, or with
``SMALLCODE_CPU_KERNELS=0``, ``linear`` is ``F.linear``: the same numbers, slower.

The OpenMP runtime is the one torch has already loaded (both are ``libgomp.so.1``), so the kernel
shares torch's threads instead of starting a second pool; it uses ``torch.get_num_threads()``.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("few_rows.c")

MAX_ROWS = 32
"""Most rows the kernel takes: at 32 rows it is level with MKL, at 64 MKL's blocked product wins."""

# Tried in order: a compiler without OpenMP (Apple's clang) or without -march=native still builds.
_FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp"],
    ["-O3", "-march=native"],
    ["-O3"],
)


def cache_dir() -> Path:
    """Where built kernels are kept: ``$SMALLCODE_CACHE_DIR``, else ``$XDG_CACHE_HOME/smallcode``."""
    if env := os.environ.get("SMALLCODE_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "smallcode"


def _cpu_id() -> str:
    """-march=native code is only valid on the CPU it was built for: key the cache by it."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.uname().machine
    lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags", "Features"))]
    return os.uname().machine + "\n" + "\n".join(dict.fromkeys(lines))


def _build(cc: list[str], flags: list[str], out_dir: Path) -> Path:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(cc).encode(), " ".join(flags).encode(), _cpu_id().encode()]))
    target = out_dir / f"few_rows-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".few_rows-", suffix=".so")
    os.close(fd)
    try:
        subprocess.run([*cc, *flags, "-shared", "-fPIC", str(SOURCE), "-o", tmp, "-lm"], check=True,
                       capture_output=True, text=True, timeout=120)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@functools.cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get("SMALLCODE_CPU_KERNELS", "1") == "0":
        return None
    found = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    cc = shlex.split(os.environ["CC"]) if os.environ.get("CC") else [found] if found else None
    if not cc:
        log.warning("no C compiler found: decoding on CPU uses torch's products (slower at a few rows)")
        return None
    errors = []
    for flags in _FLAG_SETS:
        for out_dir in (cache_dir(), Path(tempfile.gettempdir()) / f"smallcode-{os.getuid()}"):
            try:
                lib = ctypes.CDLL(str(_build(cc, flags, out_dir)))
            except subprocess.CalledProcessError as e:
                errors.append(f"{' '.join(flags)}: {e.stderr.strip().splitlines()[-1:] or e}")
                break  # the compiler refused these flags; another directory will not help
            except (OSError, subprocess.TimeoutExpired) as e:
                errors.append(f"{out_dir}: {e}")
                continue
            ptr, n = ctypes.c_void_p, ctypes.c_long
            lib.sc_linear_f32.argtypes = [ptr, n, n, ptr, n, ptr, ctypes.c_int]
            lib.sc_linear_f32.restype = None
            lib.sc_moe_f32.argtypes = [ptr, n, n, ptr, n, n, ptr, ptr, n, ptr, ctypes.c_int]
            lib.sc_moe_f32.restype = ctypes.c_int
            return lib
    log.warning("could not build %s (%s): decoding on CPU uses torch's products", SOURCE.name, "; ".join(errors))
    return None


def available() -> bool:
    """Whether the compiled kernel is loaded (builds it on the first call)."""
    return _library() is not None


def _compiled_path(x: torch.Tensor, weights: tuple[torch.Tensor, ...]) -> bool:
    """What both kernels need: eager float32 on CPU without autocast, contiguous weights, a built library."""
    return (not torch.compiler.is_compiling() and x.device.type == "cpu" and x.dtype == torch.float32
            and all(w.dtype == torch.float32 and w.is_contiguous() for w in weights)
            and not torch.is_autocast_enabled("cpu") and _library() is not None)


def usable(x: torch.Tensor, w: torch.Tensor) -> bool:
    """The kernel applies: a few float32 CPU rows, no gradient, no autocast or compile, a row-major weight."""
    # training leaves at the first test
    return (not torch.is_grad_enabled() and w.dim() == 2 and x.shape[-1] == w.shape[1]
            and x.numel() <= MAX_ROWS * w.shape[1] and _compiled_path(x, (w,)))


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, w)`` (no bias), through the compiled kernel when it applies."""
    if not usable(x, w):
        return F.linear(x, w)
    lib = _library()
    assert lib is not None
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    out = torch.empty(*x.shape[:-1], w.shape[0], dtype=x.dtype)
    lib.sc_linear_f32(x2.data_ptr(), x2.shape[0], x2.shape[1], w.data_ptr(), w.shape[0], out.data_ptr(),
                      torch.get_num_threads())
    return out


def moe_usable(x: torch.Tensor, *weights: torch.Tensor) -> bool:
    """``moe`` applies: a few float32 CPU tokens in inference mode, contiguous float32 weights."""
    return torch.is_inference_mode_enabled() and x.dim() == 2 and x.shape[0] <= MAX_ROWS and _compiled_path(x, weights)


def moe(x_ND: torch.Tensor, router: torch.Tensor, top_k: int, w_gate_up: torch.Tensor,
        w_down: torch.Tensor) -> torch.Tensor:
    """A few tokens through a routed layer of SwiGLU experts, as ``moe.MoE`` computes it: softmax over
    ``router @ x``, the ``top_k`` largest renormalised, each chosen expert's output mixed by them.
    Weights as in ``moe.Experts``: ``router`` (E, D), ``w_gate_up`` (E, 2F, D) with the gate rows first,
    ``w_down`` (E, D, F). Call only where ``moe_usable``."""
    lib = _library()
    assert lib is not None
    E, two_f, D = w_gate_up.shape
    if router.shape != (E, D) or w_down.shape != (E, D, two_f // 2) or x_ND.shape[-1] != D:
        raise ValueError(f"shapes do not fit one MoE layer: x {tuple(x_ND.shape)}, router {tuple(router.shape)}, "
                         f"w_gate_up {tuple(w_gate_up.shape)}, w_down {tuple(w_down.shape)}")
    x_ND = x_ND.contiguous()
    out = torch.empty_like(x_ND)
    status = lib.sc_moe_f32(x_ND.data_ptr(), x_ND.shape[0], D, router.data_ptr(), E, top_k, w_gate_up.data_ptr(),
                            w_down.data_ptr(), two_f // 2, out.data_ptr(), torch.get_num_threads())
    if status != 0:
        raise ValueError(f"top_k must be in 1..{E} (got {top_k}), or the MoE kernel ran out of memory")
    return out
