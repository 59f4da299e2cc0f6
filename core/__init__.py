"""ssmkit.core: the SSM math shared by every domain. Depends on torch alone.

`ops` are functions on tensors (each with a readable `_ref` oracle and fast backends behind one dispatch),
`layers` are nn.Module mixers, `blocks` holds norms, residual blocks and stacks.
"""
