"""CPU decode fast paths, swapped into a model by the engine: same function, faster few-row steps.

``prepare_for_decoding(model)`` changes the class of the model's modules in place to decode-time
subclasses (``DecodeLinear`` for the attention projections, ``DecodeHead`` for the output head,
``DecodeMoE``/``DecodeExperts`` for the feed-forward) and lays the weights out for them. Parameters,
buffers and the state dict stay what they were, so a checkpoint saved from an engine's model loads
into a plain ``SmallCodeLM``; hooks registered on the modules keep firing. Each subclass takes its
shortcut only where no gradient is wanted, and otherwise runs the reference forward of its parent,
so the reference model in ``smallcode.model`` keeps one path and knows none of this.

Why: a decode step multiplies 1-32 rows by every weight, so it runs at the speed the weights are
read from memory. The float32 products torch calls (MKL, oneDNN) read a weight well below the
memory's speed when it meets only a few rows; ``few_rows.c`` reads each weight row once, in order,
and dots it with up to four input rows held in L1 (figures in ``benchmarks/decode_vs_hf.py``).
``linear(x, w)`` is ``F.linear`` without bias (a projection's bias, as imported models have, is added
to its output); ``moe(...)`` runs a few tokens' routing and chosen
SwiGLU experts in one call per layer, which also replaces some twenty small torch operations. Both
compute what torch computes up to float32 summation order.

How the kernel is built: the C file is compiled with the system C compiler (``$CC``, else
``cc``/``gcc``/``clang``), ``-O3 -march=native -fopenmp``, into ``$SMALLCODE_CACHE_DIR`` (default
``~/.cache/smallcode``), named by a hash of the source, the compiler, the flags and the CPU, and
loaded with ctypes, which lets go of the GIL during the call. This is how torch's own Inductor
builds its CPU code: at run time, for the machine it runs on. The build is written to a temporary
file and renamed into place, so processes racing to build never load half a library. The OpenMP
runtime is the one torch has already loaded (both are ``libgomp.so.1``), so the kernel shares
torch's threads instead of starting a second pool; it uses ``torch.get_num_threads()``.

Without a compiler, or with ``SMALLCODE_CPU_KERNELS=0``, the swapped modules use torch's products
with two layout tricks instead: the projection weights are stored column-major (MKL streams an
(out, in) matrix faster for one row when its transpose is contiguous), and a batched decode step
projects through a copy of the head prepacked into oneDNN's blocked layout (``PackedLinear``).

In inference mode (the engine's decoding) the swapped feed-forward also skips what only training
reads: the router's auxiliary losses are not computed, and a single token's experts are applied
directly instead of being sorted; these two hold on any device. Not here: quantisation, GPU kernels
and ``torch.compile`` (what was measured and not kept is in the benchmark's docstring).
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
from torch import nn

from smallcode.fileio import atomic_file
from smallcode.model.moe import Experts, MoE, MoEStats
from smallcode.model.transformer import SmallCodeLM

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("few_rows.c")

MAX_ROWS = 32
"""Most rows the kernel takes: past a few dozen rows MKL's blocked product is the faster one."""

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
    with atomic_file(target) as tmp:
        subprocess.run([*cc, *flags, "-shared", "-fPIC", str(SOURCE), "-o", str(tmp), "-lm"], check=True,
                       capture_output=True, text=True, timeout=120)
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


def forget_kernel() -> None:
    """Forget which kernel was loaded, so that the next use builds or loads it again (after
    ``SMALLCODE_CPU_KERNELS``, ``$CC``, the cache directory or the source changed, as tests do)."""
    _library.cache_clear()


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
    return _linear_f32(x, w) if usable(x, w) else F.linear(x, w)


def _linear_f32(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The compiled product; call only where ``usable``."""
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


class PackedLinear:
    """A weight reordered once into oneDNN's blocked layout, for products with a few rows on CPU.

    The copy is rebuilt when the weight changes (new storage or a moved version counter), so a
    model trained between two generations is never decoded with stale weights.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        self.key = (weight.data_ptr(), weight._version)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)

    @staticmethod
    def usable(weight: torch.Tensor) -> bool:
        """oneDNN is there, the weight is a float32 CPU tensor and no gradient is wanted."""
        return (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()
                and not torch.is_grad_enabled())

    def current(self, weight: torch.Tensor) -> bool:
        return self.key == (weight.data_ptr(), weight._version)

    def __call__(self, x_ND: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x_ND, self.packed, None, "none", [], "")


class DecodeLinear(nn.Linear):
    """``nn.Linear`` whose few-row products without gradients go through the compiled kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return linear(x, self.weight)
        if usable(x, self.weight):  # an imported model's q/k/v or output bias, added after the kernel
            return _linear_f32(x, self.weight).add_(self.bias)
        return F.linear(x, self.weight, self.bias)


class DecodeHead(DecodeLinear):
    """The output head: the kernel where it applies, else a prepacked copy for a batched decode step."""

    _packed: PackedLinear | None = None

    @property
    def packed(self) -> PackedLinear | None:
        """The prepacked copy of the head a batched decode step made, if any (None once copied)."""
        return self._packed

    def __getstate__(self) -> dict:
        # oneDNN's packed tensor has no storage to copy or pickle; a copy repacks on first use.
        return {**self.__dict__, "_packed": None}

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if self.bias is None:
            if usable(x_BTD, w):
                return _linear_f32(x_BTD, w)
            if x_BTD.dim() == 3 and x_BTD.shape[1] == 1 and x_BTD.shape[0] > 1 and PackedLinear.usable(w):
                if self._packed is None or not self._packed.current(w):
                    self._packed = PackedLinear(w)
                return self._packed(x_BTD.view(x_BTD.shape[0], -1)).unsqueeze(1)
        return F.linear(x_BTD, w, self.bias)


class DecodeExperts(Experts):
    """Experts that, for fewer assignments than experts and no gradients on CPU, visit only the
    experts that received tokens (the CPU grouped matmul visits every expert, empty or not)."""

    def forward(self, x_AD: torch.Tensor, counts_E: torch.Tensor | None) -> torch.Tensor:
        if (counts_E is None or x_AD.device.type != "cpu" or torch.is_grad_enabled()
                or x_AD.shape[0] >= self.w_gate_up.shape[0]):
            return super().forward(x_AD, counts_E)
        pieces = x_AD.split(counts_E.tolist())
        return torch.cat([self.expert(p, e) for e, p in enumerate(pieces) if len(p)])


class DecodeMoE(MoE):
    """The feed-forward of a decode step: in inference mode, no auxiliary losses (the engine would
    throw them away), the compiled kernel for a few CPU tokens, and one token's experts without the
    sort; with gradients, or without inference mode, exactly ``MoE``."""

    def forward(self, x_BTD: torch.Tensor) -> tuple[torch.Tensor, MoEStats | None]:
        if self.router is None or not torch.is_inference_mode_enabled():
            return super().forward(x_BTD)
        shape = x_BTD.shape
        x_ND = x_BTD.reshape(-1, shape[-1])
        ex, router = self.experts, self.router.weight
        if moe_usable(x_ND, router, ex.w_gate_up, ex.w_down):
            return moe(x_ND, router, self.top_k, ex.w_gate_up, ex.w_down).view(shape), None
        _, weights_NK, experts_NK = self.router(x_ND)
        if x_ND.shape[0] == 1:
            return one_token(ex, x_ND, weights_NK, experts_NK).view(shape), None
        return self.dispatch(x_ND, weights_NK, experts_NK)[0].view(shape), None


def one_token(experts: Experts, x_1D: torch.Tensor, weights_1K: torch.Tensor, experts_1K: torch.Tensor
              ) -> torch.Tensor:
    """One token's chosen experts, mixed by their weights: no sorting, no gather, no unsort."""
    out_1D = None
    for w, e in zip(weights_1K[0].tolist(), experts_1K[0].tolist(), strict=True):
        y_1D = experts.expert(x_1D, e) * w
        out_1D = y_1D if out_1D is None else out_1D + y_1D
    assert out_1D is not None
    return out_1D


def _swap(module: nn.Module, reference: type[nn.Module], decode: type[nn.Module]) -> None:
    """Give a ``reference`` module its ``decode`` subclass; leave any other replacement (a quantised
    layer, say) alone."""
    if type(module) is reference:
        module.__class__ = decode


def _row_major(p: torch.Tensor) -> None:
    """Undo ``_column_major``: the same values stored contiguously again."""
    if p.device.type == "cpu" and not p.is_contiguous():
        p.data = p.data.contiguous()


def _column_major(p: torch.Tensor) -> None:
    """Keep ``p``'s shape and values but store its last two dimensions transposed."""
    if p.device.type == "cpu" and p.stride(-2) != 1:
        p.data = p.data.transpose(-2, -1).contiguous().transpose(-2, -1)


@torch.no_grad()
def prepare_for_decoding(model: SmallCodeLM) -> SmallCodeLM:
    """Swap the decode modules into ``model`` (in place, and returned) and lay out its CPU weights.

    Where the kernel is built it reads ``nn.Linear``'s row-major layout, so the weights stay (or go
    back to) row-major; otherwise they are stored column-major. Only the storage order changes:
    values, shapes and the state dict do not. The embedding keeps its rows (it is read one token at
    a time), and so does a head tied to it. Calling it again changes nothing.
    """
    for block in model.blocks:
        _swap(block.attn.wqkv, nn.Linear, DecodeLinear)
        _swap(block.attn.wo, nn.Linear, DecodeLinear)
        _swap(block.ffn, MoE, DecodeMoE)
        _swap(block.ffn.experts, Experts, DecodeExperts)
    _swap(model.lm_head, nn.Linear, DecodeHead)
    if model.lm_head.weight.device.type != "cpu":
        return model
    layout = _row_major if available() else _column_major
    for block in model.blocks:
        ffn = block.ffn
        for p in (block.attn.wqkv.weight, block.attn.wo.weight, ffn.experts.w_gate_up, ffn.experts.w_down):
            layout(p)
        if ffn.router is not None:
            layout(ffn.router.weight)
    if not model.config.tie_embeddings:
        layout(model.lm_head.weight)
    return model
