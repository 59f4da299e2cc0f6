"""Compile the Triton SSD kernels for an sm_90 GPU without one (run as a script, with TRITON_INTERPRET unset):
the interpreter accepts code the compiler rejects, so this checks that the kernels lower to a cubin."""
import sys

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ssmkit.kernels.triton import ssd_kernels as K

STATE_PTRS = ("dt_out_ptr", "cs_ptr", "st_ptr", "final_ptr", "h0_ptr", "A_ptr", "bias_ptr", "limit_ptr", "D_ptr")
JOBS = [
    (K.ssd_chunk_cumsum_kernel, dict(HAS_BIAS=True, SOFTPLUS=True, HAS_LIMIT=True, BLOCK_Q=64, BLOCK_H=8)),
    (K.ssd_chunk_state_kernel, dict(HAS_SEQ=True, BLOCK_P=64, BLOCK_N=64, BLOCK_K=64)),
    (K.ssd_state_passing_kernel, dict(HAS_H0=True, HAS_SEQ=True, BLOCK=1024)),
    (K.ssd_chunk_scan_kernel, dict(HAS_SEQ=True, HAS_D=True, D_PER_P=True, HAS_Z=True, BLOCK_M=64, BLOCK_K=64,
                                   BLOCK_P=64, BLOCK_N=64)),
]


def signature(fn, consts, inputs):
    """Types of every argument: inputs in `inputs` (e.g. bf16), state buffers fp32, seq_idx int64, sizes int32."""
    def kind(name):
        if name in consts:
            return "constexpr"
        if not name.endswith("_ptr"):
            return "i32"
        return "*i64" if name == "seq_ptr" else "*fp32" if name in STATE_PTRS else "*" + inputs
    return {name: kind(name) for name in fn.arg_names}


def main(inputs):
    for fn, consts in JOBS:
        consts = dict(consts, ACC=tl.float32)
        triton.compile(ASTSource(fn, signature(fn, consts, inputs), consts), target=GPUTarget("cuda", 90, 32))
        print(f"{fn.__name__}: compiled for sm_90 with {inputs} inputs")


if __name__ == "__main__":
    main(sys.argv[1])
