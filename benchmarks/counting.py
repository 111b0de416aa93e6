"""Counting what a step does: passes and temporaries of compiled code, temporaries of eager code.

**Compiled** (:func:`analyse`): the code inductor generates for a CPU graph.

A *pass* is one loop nest that touches param-sized buffers (at least half of ``numel``, the
number of param elements):
it streams each of them through the cache once. Its bytes per element are the element sizes of
the distinct param-sized buffers it reads plus those it writes. An ``extern_kernels`` or aten
fallback call with a param-sized argument counts as a pass too (reading its inputs, writing its
output). Small buffers (one number per tensor or per chunk) are not counted: they move a
negligible number of bytes.

    from torch._inductor.utils import run_and_get_code
    _, codes = run_and_get_code(compiled_fn, *args)
    print(analyse(codes, numel).summary())

This reads inductor's C++ wrapper and kernels as torch 2.13 writes them (``cpp_fused_*``
kernels called from ``Runner.call``); it is a measuring tool for the benchmarks, not a parser
for every codegen option (``cpp_wrapper``, GPU Triton kernels are not read). Its temporaries
are the param-sized buffers the wrapper allocates (``empty_strided_cpu``), in param sizes.

**Eager** (:class:`TemporaryPeak`): a dispatch mode that tracks the tensors ops allocate while
it is active (weak references, so a tensor freed is subtracted) and reports the peak bytes
alive at once; divide by the param bytes for "param-sized temporaries".
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import weakref
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_ELEMENT_BYTES = {
    "float": 4, "double": 8, "int64_t": 8, "int32_t": 4, "bool": 1, "half": 2,
    "bfloat16": 2, "uint8_t": 1, "int8_t": 1, "int16_t": 2,
}
_TORCH_BYTES = {
    "float32": 4, "float64": 8, "int64": 8, "int32": 4, "bool": 1, "float16": 2,
    "bfloat16": 2, "uint8": 1, "int8": 1, "int16": 2,
}


@dataclasses.dataclass
class Pass:
    kernel: str
    reads: list[str]
    writes: list[str]
    bytes_per_element: int


@dataclasses.dataclass
class Analysis:
    kernels: int  # kernel launches (generated kernels and extern calls) per step
    passes: list[Pass]
    temporaries: float = 0.0  # buffers the step allocates, in param sizes (those >= numel / 2)

    @property
    def bytes_per_element(self) -> int:
        return sum(p.bytes_per_element for p in self.passes)

    def summary(self) -> str:
        body = "; ".join(
            f"{p.kernel}: r {','.join(p.reads)} w {','.join(p.writes)} ({p.bytes_per_element} B)"
            for p in self.passes
        )
        return (f"{self.kernels} kernels, {len(self.passes)} passes, "
                f"{self.bytes_per_element} B/elem, {self.temporaries:g} temporaries [{body}]")


@contextlib.contextmanager
def generated_code():
    """Collect the modules inductor generates inside the block (its caches off, so that every
    graph compiled in the block is generated, and seen, again)."""
    from torch._inductor.graph import GraphLowering

    codes: list[str] = []
    with (
        mock.patch.object(GraphLowering, "save_output_code", codes.append, create=True),
        torch._inductor.config.patch(fx_graph_cache=False),
        torch._functorch.config.patch(enable_autograd_cache=False),
    ):
        yield codes


def analyse(codes: str | list[str], numel: int) -> Analysis:
    """Kernels and param-sized passes of one or more generated modules (summed)."""
    if isinstance(codes, str):
        codes = [codes]
    total = Analysis(0, [])
    for code in codes:
        one = _analyse_module(code, numel)
        total.kernels += one.kernels
        total.passes += one.passes
        total.temporaries += one.temporaries
    return total


def _analyse_module(code: str, numel: int) -> Analysis:
    min_numel = numel // 2
    kernels = _kernel_sources(code)
    sizes, dtypes, alias = _buffers(code)
    call = _call_body(code)
    out = Analysis(0, [])
    for match in re.finditer(r"(buf\d+) = empty_strided_\w+\(\(([\d, ]*)\)", call):
        size = _prod(match.group(2))
        if size >= min_numel:
            out.temporaries += size / numel
    for line in call.splitlines():
        line = line.strip()
        match = re.match(r"(\w[\w.]*)\((.*)\)$", line)
        if not match or "=" in line.split("(")[0]:
            continue
        name, arglist = match.groups()
        args = _split_args(arglist)
        if name in kernels:
            out.kernels += 1
            out.passes += _kernel_passes(name, kernels[name], args, sizes, dtypes, alias, min_numel)
        elif name.startswith(("extern_kernels.", "aten.", "torch.ops.")):
            out.kernels += 1
            big = [_base(a, alias) for a in args if _numel_of(a, sizes, alias) >= min_numel]
            if big:
                nbytes = sum(_TORCH_BYTES.get(dtypes.get(b, "float32"), 4) for b in big)
                out.passes.append(Pass(name, big, [], nbytes))
    # an extern call whose result is assigned (buf3 = aten.x(...)) writes a new buffer
    assigned = r"^\s*(buf\d+) = ((?:extern_kernels|aten|torch\.ops)\.[\w.]+)\((.*)\)$"
    for match in re.finditer(assigned, call, re.M):
        target, name, arglist = match.groups()
        out.kernels += 1
        args = _split_args(arglist)
        reads = [_base(a, alias) for a in args if _numel_of(a, sizes, alias) >= min_numel]
        writes = [target] if sizes.get(target, 0) >= min_numel else []
        if reads or writes:
            nbytes = sum(_TORCH_BYTES.get(dtypes.get(b, "float32"), 4) for b in reads + writes)
            out.passes.append(Pass(name, reads, writes, nbytes))
    return out


def _kernel_sources(code: str) -> dict[str, tuple[list[str], str]]:
    """kernel name -> (pointer parameter names in order, C++ body)."""
    found = {}
    pattern = re.compile(
        r"^(cpp_fused\w*) = async_compile\.cpp_pybinding\((\[.*?\]), r?'''(.*?)'''", re.M | re.S
    )
    for match in pattern.finditer(code):
        name, _, source = match.groups()
        header = re.search(r"void\s+kernel\((.*?)\)\s*\{", source, re.S)
        if header is None:
            continue
        params = [p.strip().split()[-1].lstrip("*") for p in header.group(1).split(",")]
        types = [" ".join(p.strip().split()[:-1]) for p in header.group(1).split(",")]
        found[name] = (list(zip(params, types, strict=True)), source[header.end():])
    return found


def _buffers(code: str):
    sizes: dict[str, int] = {}
    dtypes: dict[str, str] = {}
    alias: dict[str, str] = {}
    for match in re.finditer(r"assert_size_stride\((\w+), \(([\d, ]*)\)", code):
        sizes[match.group(1)] = _prod(match.group(2))
    for match in re.finditer(r"(\w+) = rand_strided\(\(([\d, ]*)\).*?dtype=torch\.(\w+)\)", code):
        sizes.setdefault(match.group(1), _prod(match.group(2)))
        dtypes[match.group(1)] = match.group(3)
    allocated = r"(\w+) = empty_strided_\w+\(\(([\d, ]*)\), \([\d, ]*\), torch\.(\w+)\)"
    for match in re.finditer(allocated, code):
        sizes[match.group(1)] = _prod(match.group(2))
        dtypes[match.group(1)] = match.group(3)
    for match in re.finditer(r"(\w+) = reinterpret_tensor\((\w+), \(([\d, ]*)\)", code):
        sizes[match.group(1)] = _prod(match.group(3))
        alias[match.group(1)] = match.group(2)
    return sizes, dtypes, alias


def _call_body(code: str) -> str:
    match = re.search(r"def call\(self, args\):\n(.*?)\n(?:runner = |def |class )", code, re.S)
    if match is None:
        match = re.search(r"def call\(args\):\n(.*?)\n(?:def |class |\Z)", code, re.S)
    return match.group(1) if match else ""


def _split_args(arglist: str) -> list[str]:
    args, depth, current = [], 0, ""
    for ch in arglist:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            args.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        args.append(current.strip())
    return args


def _base(arg: str, alias: dict[str, str]) -> str:
    match = re.match(r"reinterpret_tensor\((\w+),", arg)
    name = match.group(1) if match else arg
    while name in alias:
        name = alias[name]
    return name


def _numel_of(arg: str, sizes: dict[str, int], alias: dict[str, str]) -> int:
    match = re.match(r"reinterpret_tensor\((\w+), \(([\d, ]*)\)", arg)
    if match:
        return _prod(match.group(2))
    return sizes.get(arg, 0)


def _prod(dims: str) -> int:
    out = 1
    for d in dims.replace(" ", "").split(","):
        if d:
            out *= int(d)
    return out


def _kernel_passes(name, kernel, args, sizes, dtypes, alias, min_numel) -> list[Pass]:
    params, body = kernel
    if len(params) != len(args):
        return []
    big = {}  # pointer name -> (underlying buffer, element bytes)
    for (pointer, ctype), arg in zip(params, args, strict=True):
        if _numel_of(arg, sizes, alias) >= min_numel:
            element = ctype.replace("const", "").replace("*", "").strip()
            big[pointer] = (_base(arg, alias), _ELEMENT_BYTES.get(element, 4))
    passes = []
    for nest in _top_level_loops(body):
        reads, writes = {}, {}
        for pointer, (buffer, nbytes) in big.items():
            p = re.escape(pointer)
            write = re.compile(
                rf"\.store\({p}\b|\b{p}\[[^\]]*\]\s*=(?!=)|atomic_add\w*\(\s*{p}\b"
            )
            if write.search(nest):
                writes[buffer] = nbytes
            if re.search(rf"\b{p}\b", write.sub("", nest)):
                reads[buffer] = nbytes
        if reads or writes:
            passes.append(Pass(name, sorted(reads), sorted(writes),
                               sum(reads.values()) + sum(writes.values())))
    return passes


def _top_level_loops(body: str) -> list[str]:
    """The bodies of the outermost ``for`` loops of a C++ kernel body."""
    nests, i = [], 0
    while True:
        start = body.find("for(", i)
        if start < 0:
            return nests
        brace = body.find("{", start)
        depth, j = 0, brace
        while j < len(body):
            if body[j] == "{":
                depth += 1
            elif body[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        nests.append(body[start:j + 1])
        i = j + 1


# ----------------------------------------------------------------------------- eager


class TemporaryPeak(TorchDispatchMode):
    """Peak bytes of the tensors that ops allocate (and that are still alive) while active."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}
        for t in _tensors(out):
            ptr = t.untyped_storage().data_ptr()
            if ptr in inputs or ptr in self._seen or t.device.type == "meta":
                continue
            self._seen.add(ptr)
            size = t.untyped_storage().nbytes()
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(t.untyped_storage(), self._free, ptr, size)
        return out

    def _free(self, ptr, size):
        self.live -= size
        self._seen.discard(ptr)


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _tensors(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _tensors(item)
