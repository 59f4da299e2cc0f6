"""Functions on tensors. Each op `<op>` has a sequential `<op>_ref` oracle and `backend=` dispatch."""
