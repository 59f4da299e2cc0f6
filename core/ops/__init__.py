"""Functions on tensors. Each op `<op>` has a readable sequential `<op>_ref` oracle; the scans with accelerated
implementations (selective_scan, ssd, ssd_noncausal, causal_conv1d, selective_scan_states) take `backend=`.
The scans of Mamba and Mamba-2 have a one-step form for decoding: `selective_state_update`, `ssd_state_update`;
whole mixers step in one call with `mamba_mixer_step` / `time_ssd_step` (fused on CPU for inference), and
`postnorm_ffn` is the post-norm residual feed-forward of RecBole-style layers.
"""
from ._checks import check_same_device, check_tensor
from .conv import causal_conv1d, causal_conv1d_ref, causal_conv1d_update
from .selective_scan import selective_scan, selective_scan_ref, selective_state_update, selective_state_update_ref
from .fft_conv import fft_conv, fft_conv_ref
from .s4_kernels import (dplr_discretize, dplr_kernel, dplr_kernel_ref, dplr_matrix, s4d_discretize, s4d_kernel,
                         s4d_kernel_ref)
from .xlstm import (mlstm_chunkwise, mlstm_parallel, mlstm_ref, mlstm_step, mlstm_zero_state, slstm, slstm_step,
                    slstm_zero_state)
from .companion import companion_kernel, companion_kernel_ref, companion_kernel_squaring, companion_matrix, krylov
from .ssd import ssd, ssd_ref, ssd_state_update, ssd_state_update_ref
from .ssd_noncausal import ssd_noncausal, ssd_noncausal_ref
from .scan2d import cross_merge, cross_scan, route
from .scan_states import selective_scan_states, selective_scan_states_ref
from .chimera2d import selective_scan_2d, selective_scan_2d_ref
from .convssm import convssm_scan, convssm_scan_ref
from .mixer_step import mamba_mixer_step, mamba_mixer_step_ref, time_ssd_step, time_ssd_step_ref
from .postnorm_ffn import postnorm_ffn, postnorm_ffn_ref
