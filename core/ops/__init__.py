"""Functions on tensors. Each op `<op>` has a sequential `<op>_ref` oracle and `backend=` dispatch."""
from .conv import causal_conv1d, causal_conv1d_ref, causal_conv1d_update
from .selective_scan import selective_scan, selective_scan_ref
from .scan2d import cross_merge, cross_scan, route
from .scan_states import selective_scan_states, selective_scan_states_ref
from .chimera2d import selective_scan_2d, selective_scan_2d_ref
from .convssm import convssm_scan, convssm_scan_ref
