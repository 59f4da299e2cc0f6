"""Functions on tensors. Each op `<op>` has a sequential `<op>_ref` oracle and `backend=` dispatch."""
from .conv import causal_conv1d, causal_conv1d_ref, causal_conv1d_update
from .selective_scan import selective_scan, selective_scan_ref
from .ssd import ssd, ssd_ref
from .ssd_noncausal import ssd_noncausal, ssd_noncausal_ref
