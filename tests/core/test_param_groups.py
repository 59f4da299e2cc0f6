"""The optimiser-parameter convention: each documented hint `p._optim` (and timm's `no_weight_decay()`) reaches the
optimiser built by `ssmkit.train`: S4 / S4D SSM parameters, Hyena's filter MLP, Mamba's A_log and D, a Vim backbone."""
import torch
import torch.nn as nn

from ssmkit.core.init import optim_hint, set_optim
from ssmkit.core.layers import S4, S4D, Hyena, Mamba, Mamba2
from ssmkit.train import TaskBase
from ssmkit.vision.models.vim import VisionMamba

LR, WD = 3e-2, 0.1


class Task(TaskBase):
    def __init__(self):
        super().__init__(lr=LR, weight_decay=WD)
        self.model = nn.ModuleDict({
            "s4": S4(8, d_state=4), "s4d": S4D(8, d_state=4, lr=2e-3), "hyena": Hyena(8, l_max=16, filter_lr=5e-4),
            "mamba": Mamba(8, d_state=4), "mamba2": Mamba2(16, d_state=8, headdim=8),
            "vim": VisionMamba(img_size=16, patch_size=8, embed_dim=16, depth=2, d_state=4, num_classes=3)})


def _group_of(opt):
    where = {}
    for g in opt.param_groups:
        for p in g["params"]:
            assert id(p) not in where, "a parameter sits in two groups"
            where[id(p)] = (g["lr"], g["weight_decay"])
    return where


def test_each_documented_hint_reaches_the_optimizer():
    task = Task()
    where = _group_of(task.configure_optimizers())
    params = dict(task.named_parameters())
    assert set(where) == {id(p) for p in params.values()}
    # What the docstrings promise, written out by name (an oracle independent of the hint attributes).
    expected = {}
    for n in ("inv_dt", "A_real", "A_imag", "B", "P"):
        expected[f"model.s4.kernel.{n}"] = (1e-3, 0.0)                      # S4 default: lr 1e-3, no decay
    for n in ("log_dt", "log_A_real", "A_imag"):
        expected[f"model.s4d.kernel.{n}"] = (2e-3, 0.0)
    expected["model.s4.kernel.C"] = expected["model.s4d.kernel.C"] = (LR, WD)  # C is a regular weight (as s4)
    for n in params:
        if n.startswith("model.hyena.filter_fn.implicit_filter."):
            expected[n] = (5e-4, 0.0)
    for n in ("A_log", "D"):
        expected[f"model.mamba.{n}"] = (LR, 0.0)
    for n in ("A_log", "D", "dt_bias"):
        expected[f"model.mamba2.{n}"] = (LR, 0.0)
    expected["model.vim.pos_embed"] = expected["model.vim.cls_token"] = (LR, 0.0)  # timm no_weight_decay()
    expected["model.vim.layers.0.mixer.A_b_log"] = (LR, 0.0)
    for n in ("model.mamba.in_proj.weight", "model.hyena.in_proj.weight", "model.vim.patch_embed.proj.weight",
              "model.s4.output_linear.0.weight", "model.mamba2.out_proj.weight"):
        expected[n] = (LR, WD)
    assert len([n for n in params if n.startswith("model.hyena.filter_fn.implicit_filter.")]) == 8
    for name, want in expected.items():
        assert where[id(params[name])] == want, name
    # Every other parameter: its hint if any, else no decay for 1-D tensors and decay for the rest.
    for name, p in params.items():
        hint = optim_hint(p)
        default = (LR, 0.0 if p.ndim < 2 or name in ("model.vim.pos_embed", "model.vim.cls_token") else WD)
        want = (hint.get("lr", LR), hint.get("weight_decay", default[1])) if hint else default
        assert where[id(p)] == want, name


def test_hints_survive_dtype_and_device_moves_and_weight_decay_zero_merges_groups():
    layer = S4D(4, d_state=4).double()
    assert layer.kernel.log_dt._optim == {"weight_decay": 0.0, "lr": 1e-3}
    assert S4D(4, d_state=4, lr=None).kernel.log_dt._optim == {"weight_decay": 0.0}
    lin = nn.Linear(3, 3)
    set_optim(lin.weight, weight_decay=0.0)

    class T(TaskBase):
        def __init__(self):
            super().__init__(lr=1.0, weight_decay=0.0)
            self.lin = lin

    groups = T().configure_optimizers().param_groups
    assert len(groups) == 1 and {id(p) for p in groups[0]["params"]} == {id(lin.weight), id(lin.bias)}
    assert torch.equal(groups[0]["params"][0], lin.weight)
