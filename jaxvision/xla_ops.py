"""Which library runs each convolution and matrix product of a compiled XLA:CPU program.

XLA:CPU (jaxlib 0.10.x) hands most convolutions and dots to a library and runs the rest itself.
Reading the optimized HLO (``jax.jit(f).lower(...).compile().as_text()``) shows which:

* **YNNPACK** (XLA's successor to XNNPACK): the operation sits in a computation called by a
  fusion of kind ``kCustom`` whose backend config reads ``"fusion_config":{"kind":"__ynn_fusion"``
  (the fusion instruction is named ``%ynn_fusion.N``), e.g.
  ``%ynn_fusion.77 = f32[2,8,8,32]{3,2,1,0} fusion(...), kind=kCustom, calls=%fused_computation.77,
  ..., backend_config={"fusion_config":{"kind":"__ynn_fusion"},...}``;
* **oneDNN** (only with ``--xla_cpu_use_onednn=true`` and a fusion type such as
  ``--xla_cpu_experimental_onednn_fusion_type=dot``): a ``kCustom`` fusion whose config kind
  names oneDNN (``"__onednn_fusion"``), or a ``custom-call`` whose target does (``__onednn$...``);
* **Eigen**: anything else. A convolution or dot left in an ordinary computation (the entry
  computation, a ``while`` body, a ``kLoop``/``kOutput`` fusion) runs through XLA's own runtime:
  Eigen's convolution and matrix-product kernels (or, for a tiny dot inside a loop fusion, code
  XLA emits itself). These are the slow paths: for example the lhs-dilated convolution of a
  stride-2 convolution's input gradient, which YNNPACK does not take.

:func:`library_calls` lists them all; :func:`fallbacks` keeps those on Eigen;
:func:`format_calls` prints them as a table (``jaxvision bench MODEL --list-fallbacks``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

YNNPACK = "ynnpack"
ONEDNN = "onednn"
EIGEN = "eigen"
LIBRARIES = (YNNPACK, ONEDNN, EIGEN)

# Opcodes that may call other computations, and the attributes naming them.
_CALLED = re.compile(
    r"\b(?:calls|to_apply|body|condition|true_computation|false_computation)=(%[\w.\-]+)"
)
_BRANCHES = re.compile(r"\bbranch_computations=\{([^}]*)\}")
_HEADER = re.compile(r"^(ENTRY )?(%?[\w.\-]+) \(.*\) -> .* \{$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?(%[\w.\-]+) = (.*)$")
_FUSION_KIND = re.compile(r'"fusion_config":\{"kind":"([^"]*)"')
_TARGET = re.compile(r'custom_call_target="([^"]*)"')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_OPERANDS = re.compile(r"(%[\w.\-]+)")


@dataclass(frozen=True)
class LibraryCall:
    """One convolution or dot of a compiled program and the library that runs it.

    ``signature`` is what identifies the operation regardless of instruction names: operand and
    result shapes, plus the window and dimension labels of a convolution or the contracting and
    batch dimensions of a dot, e.g. ``f32[2,16,16,16] x f32[3,3,16,32] -> f32[2,8,8,32]
    window={size=3x3 stride=2x2 pad=1_1x1_1} dim_labels=b01f_01io->b01f``. ``op_name`` is JAX's
    name of the operation that produced it (the layer's path), for the reader.
    """

    kind: str  # "convolution" or "dot"
    library: str  # one of LIBRARIES
    signature: str
    op_name: str = ""


def _type_and_rest(text: str) -> tuple[str, str]:
    """Split ``f32[2,3]{1,0} dot(...)`` or ``(f32[2], s32[]) tuple(...)`` into type and rest."""
    if text.startswith("("):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                return text[: i + 1], text[i + 1 :].lstrip()
    head, _, rest = text.partition(" ")
    return head, rest


def _strip_layout(shape: str) -> str:
    return re.sub(r"\{[^{}]*\}", "", shape)


def _attribute(rest: str, name: str) -> str | None:
    m = re.search(rf"\b{name}=(\{{[^}}]*\}}|[^,\s]+)", rest)
    return m.group(1) if m else None


def _library_of_call(rest: str) -> str | None:
    """The library a fusion / custom-call instruction hands its computation to, if any."""
    kind = _FUSION_KIND.search(rest)
    if kind and "kind=kCustom" in rest:
        name = kind.group(1).lower()
        if "ynn" in name or "xnn" in name:
            return YNNPACK
        if "onednn" in name or "mkl" in name:
            return ONEDNN
    target = _TARGET.search(rest)
    if target:
        name = target.group(1).lower()
        if "onednn" in name or "mkl" in name:
            return ONEDNN
        if "ynn" in name or "xnn" in name:
            return YNNPACK
    return None


def library_calls(hlo: str | object) -> list[LibraryCall]:
    """Every convolution and dot of an optimized XLA:CPU module and the library that runs it.

    ``hlo`` is the module's text or a compiled object with ``as_text()`` (``jax.stages.Compiled``).
    A custom call to oneDNN (``__onednn$matmul``, ``__onednn$convolution``) counts as a call too.
    """
    text = hlo if isinstance(hlo, str) else hlo.as_text()
    shapes: dict[str, str] = {}
    op_names: dict[str, str] = {}  # instruction -> JAX op name, where it carries one
    producers: dict[str, list[str]] = {}  # instruction -> its operands
    bodies: dict[str, list[tuple[str, str, str]]] = {}  # computation -> (name, type, rest)
    entry = None
    current: list[tuple[str, str, str]] | None = None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            name = header.group(2).lstrip("%")
            current = bodies.setdefault(name, [])
            if header.group(1):
                entry = name
            continue
        if line.startswith("}"):
            current = None
            continue
        inst = _INSTRUCTION.match(line)
        if inst and current is not None:
            type_, rest = _type_and_rest(inst.group(2))
            shapes[inst.group(1)] = _strip_layout(type_)
            op_name = _OP_NAME.search(rest)
            if op_name:
                op_names[inst.group(1)] = op_name.group(1)
            opcode = rest.partition("(")[0]
            producers[inst.group(1)] = _OPERANDS.findall(rest[len(opcode) + 1 :].split(")", 1)[0])
            current.append((inst.group(1), type_, rest))

    # Library of every computation: inherited from the caller, set by a library fusion; and the
    # caller's op name, for instructions inside fusions that carry none of their own.
    library: dict[str, str] = {}
    caller_op: dict[str, str] = {}
    order = [entry] if entry else list(bodies)
    for name in order:
        library.setdefault(name, EIGEN)
    while order:
        comp = order.pop()
        for _, _, rest in bodies.get(comp, ()):
            callees = [c.lstrip("%") for c in _CALLED.findall(rest)]
            for group in _BRANCHES.findall(rest):
                callees += [c.strip().lstrip("%") for c in group.split(",") if c.strip()]
            target = _library_of_call(rest) or library[comp]
            op_name = _OP_NAME.search(rest)
            for callee in callees:
                if callee in bodies and callee not in library:
                    library[callee] = target
                    caller_op[callee] = op_name.group(1) if op_name else caller_op.get(comp, "")
                    order.append(callee)

    calls = []
    for comp, instructions in bodies.items():
        lib = library.get(comp, EIGEN)
        for _, type_, rest in instructions:
            opcode = rest.partition("(")[0]
            if opcode == "custom-call":
                called = _library_of_call(rest)
                target = (_TARGET.search(rest) or [None, ""])[1].lower()
                if called is None or not any(k in target for k in ("matmul", "conv", "dot")):
                    continue
                kind = "convolution" if "conv" in target else "dot"
                lib_here = called
            elif opcode in ("convolution", "dot"):
                kind, lib_here = opcode, lib
            else:
                continue
            args = _OPERANDS.findall(rest[len(opcode) + 1 :].split(")", 1)[0])
            operands = [shapes.get(o, "?") for o in args]
            parts = [" x ".join(operands) + " -> " + _strip_layout(type_)]
            if kind == "convolution":
                for attr in ("window", "dim_labels", "feature_group_count"):
                    value = _attribute(rest, attr)
                    if value:
                        parts.append(f"{attr}={value}")
            else:
                for attr in (
                    "lhs_batch_dims",
                    "lhs_contracting_dims",
                    "rhs_batch_dims",
                    "rhs_contracting_dims",
                ):
                    value = _attribute(rest, attr)
                    if value:
                        parts.append(f"{attr}={value}")
            # An instruction an XLA pass created carries no op name: take its fusion's, else
            # the nearest operand's (e.g. through the layout copies of a kernel gradient's inputs).
            op_name = _OP_NAME.search(rest)
            name = op_name.group(1) if op_name else caller_op.get(comp, "")
            name = name or _nearest_op_name(args, producers, op_names)
            calls.append(LibraryCall(kind, lib_here, " ".join(parts), name))
    return calls


def _nearest_op_name(
    start: list[str], producers: dict[str, list[str]], op_names: dict[str, str], depth: int = 6
) -> str:
    """The op name of the closest instruction upstream of ``start`` that has one."""
    frontier, seen = list(start), set(start)
    for _ in range(depth):
        named = [op_names[n] for n in frontier if n in op_names]
        if named:
            return named[0]
        frontier = [p for n in frontier for p in producers.get(n, ()) if p not in seen]
        seen.update(frontier)
    return ""


def fallbacks(calls: Iterable[LibraryCall] | str | object) -> list[LibraryCall]:
    """The convolutions and dots left to Eigen (not in a YNNPACK or oneDNN fusion or call)."""
    if isinstance(calls, str) or hasattr(calls, "as_text"):
        calls = library_calls(calls)
    return [c for c in calls if c.library == EIGEN]


def format_calls(calls: Sequence[LibraryCall], *, markdown: bool = False) -> str:
    """A table: library, kind, signature and JAX's op name of every call given, Eigen first."""
    rank = {EIGEN: 0, ONEDNN: 1, YNNPACK: 2}
    rows = sorted(calls, key=lambda c: (rank.get(c.library, 3), c.kind, c.op_name, c.signature))
    header = ("library", "op", "shapes and dimensions", "JAX op")
    table = [header, *[(c.library, c.kind, c.signature, _short(c.op_name)) for c in rows]]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|:--|:--|:--|:--|"]
        lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in table
    ).rstrip()


def _short(op_name: str) -> str:
    """JAX's op name without the ``jit(...)/`` prefix and transformation wrappers' noise."""
    return re.sub(r"^jit\([^)]*\)/", "", op_name)


def summary(calls: Sequence[LibraryCall]) -> dict[str, dict[str, int]]:
    """Counts per library and kind: ``{"eigen": {"convolution": 3, "dot": 2}, ...}``."""
    out: dict[str, dict[str, int]] = {lib: {"convolution": 0, "dot": 0} for lib in LIBRARIES}
    for c in calls:
        out.setdefault(c.library, {"convolution": 0, "dot": 0})[c.kind] += 1
    return out


__all__ = [
    "EIGEN",
    "LIBRARIES",
    "LibraryCall",
    "ONEDNN",
    "YNNPACK",
    "fallbacks",
    "format_calls",
    "library_calls",
    "summary",
]
