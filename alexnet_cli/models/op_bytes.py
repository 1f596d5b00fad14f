"""What a custom op's kernels read and write, for ``alexnet benchmark traffic``.

The counter sees every aten op's tensors, but a custom op is one node whose kernels it cannot see (the Triton
LRN runs two kernels and a float32 scratch buffer in its backward). Such an op registers here, beside its
definition, the bytes its kernels move; the counter refuses to count an op it knows nothing about as zero.
"""

from collections.abc import Callable

# (the op's tensor arguments in order, its outputs) → (bytes read, bytes written)
OpBytes = Callable[[list, list], tuple[int, int]]
_FORMULAS: dict[str, OpBytes] = {}


def register_op_bytes(op_name: str) -> Callable[[OpBytes], OpBytes]:
    """Register the byte formula of the custom op ``namespace::name``."""

    def register(formula: OpBytes) -> OpBytes:
        _FORMULAS[op_name] = formula
        return formula

    return register


def op_bytes_formula(op_name: str) -> OpBytes | None:
    return _FORMULAS.get(op_name)
