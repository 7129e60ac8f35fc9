"""How a model runs when it is deployed: its dtype, memory format, and whether it is compiled.

Speed objectives time a model the way it will run (a GPU model usually runs in float16 or
bfloat16, channels-last, often compiled), and a model deployed in a lower precision has
its accuracy checked in that precision too.

    >>> import torch
    >>> d = Deployment("fp16", channels_last=True)
    >>> d.dtype, d.describe()
    ('float16', 'float16, channels_last')
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten())
    >>> d.model(net)[0].weight.dtype, net[0].weight.dtype  # a converted copy
    (torch.float16, torch.float32)
    >>> Deployment().is_default
    True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from . import _checks
from .errors import AutopruneError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def dtype_name(value: object, param: str = "dtype") -> str:
    """The canonical name of a deployment dtype (aliases ``fp16``, ``bf16``... accepted).

    >>> dtype_name("bf16"), dtype_name(torch.float16)
    ('bfloat16', 'float16')
    """
    if isinstance(value, torch.dtype):
        value = str(value).removeprefix("torch.")
    name = ALIASES.get(value, value) if isinstance(value, str) else value
    return _checks.choice(param, name, DTYPES)


@dataclass(frozen=True)
class Deployment:
    """The form a model is timed (and, below float32, accuracy-checked) in.

    Args:
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` (or ``fp16``, ``bf16``...):
            weights and inputs are converted to it.
        channels_last: store 4-D weights and inputs channels-last (NHWC), which GPUs'
            tensor cores and oneDNN's blocked convolutions prefer.
        compile: run the model through :func:`torch.compile`. Compiling costs seconds to
            a minute per model, and every candidate of a search is a new model.
        param: the name errors use for this group of settings.
    """

    dtype: str = "float32"
    channels_last: bool = False
    compile: bool = False
    param: str = field(default="deployment", compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", dtype_name(self.dtype, f"{self.param}.dtype"))
        for flag in ("channels_last", "compile"):
            if not isinstance(getattr(self, flag), bool):
                raise _checks.fail(f"{self.param}.{flag}", "true or false", getattr(self, flag))

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def is_default(self) -> bool:
        """Plain float32 eager: the model as it is."""
        return self.dtype == "float32" and not self.channels_last and not self.compile

    @property
    def lowers_precision(self) -> bool:
        """Whether accuracy must be checked again in this form (a dtype below float32)."""
        return self.dtype != "float32"

    def to_dict(self) -> dict[str, object]:
        """``{"dtype", "channels_last", "compile"}``: ``Deployment(**d)`` reads it back."""
        return {"dtype": self.dtype, "channels_last": self.channels_last, "compile": self.compile}

    def describe(self) -> str:
        parts = [self.dtype] + [f for f in ("channels_last", "compile") if getattr(self, f)]
        return ", ".join(parts)

    def model(self, model: nn.Module) -> nn.Module:
        """The model in this form: a converted (and compiled) copy, or ``model`` itself
        when nothing changes."""
        if self.is_default:
            return model
        out = copy.deepcopy(model).to(self.torch_dtype)
        if self.channels_last:
            out = out.to(memory_format=torch.channels_last)
        if self.compile:
            return compiled(out)
        return out

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """An input in this form (channels-last applies to 4-D inputs only)."""
        if x.is_floating_point():
            x = x.to(self.torch_dtype)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def evaluated(self, model: nn.Module) -> nn.Module:
        """The model in this form (not compiled), taking and returning float32 tensors: what
        accuracy is measured on."""
        return _Deployed(Deployment(self.dtype, self.channels_last).model(model), self)


class _Deployed(nn.Module):
    def __init__(self, inner: nn.Module, deployment: Deployment) -> None:
        super().__init__()
        self.inner = inner
        self.deployment = deployment

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(self.deployment.input(x))
        return out.float() if isinstance(out, torch.Tensor) else out


def compiled(model: nn.Module) -> nn.Module:
    """``torch.compile(model)`` with a fresh compiler cache, so that a run that compiles
    many models of one class never falls back to eager after the recompile limit.

    A model PyTorch cannot compile here is an :class:`~autoprune.errors.AutopruneError`
    naming the fix, raised when the model first runs.
    """
    torch._dynamo.reset()
    inner = torch.compile(model, dynamic=False)

    class _Compiled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            try:
                return self.inner(x)
            except Exception as e:  # the compiler's errors have no common base
                raise AutopruneError(
                    f"compile: torch.compile failed on this machine ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}); set compile to false"
                ) from e

    return _Compiled()
