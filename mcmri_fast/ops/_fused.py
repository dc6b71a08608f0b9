"""The scaffolding every fused op shares, written once: an op module states what is particular to it
(its validation, which backends run which inputs, its maths) and `FusedOp` builds the rest.

    _prelu = FusedOp("prelu", kernels=("prelu_fwd", "prelu_bwd"))

    @_prelu.forward
    def _(k, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:      # k: the backend's kernels
        return k.prelu_fwd(x, weight)

    @_prelu.fake
    def _(x, weight):
        return torch.empty_like(x)

    @_prelu.backward(saves=("x", "weight"), grads=("x", "weight"))
    def _(k, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_x: bool, need_weight: bool) -> ...

- The kernels: `k.<name>` is `torch.ops.mcmri_fast.<name>` (the C++ ops, registered for CPU and CUDA
  tensors) on the cpu and cuda backends, and the function of that name in `mcmri_fast.kernels.<module>`
  (the Triton twin, `module` defaults to the op's name) on the triton backend. `k.backend` is its name.
- The custom ops `mcmri_fast::<name>` and `mcmri_fast::<name>_backward` (one node each under
  torch.compile) take the forward's / backward's arguments after `k`, plus the backend's name.
- The autograd saves the named inputs, keeps the other named arguments (non-tensors) on the context, and
  calls the backward op with (grads of the outputs, saved, kept, one need flag per gradient when
  `need_flags`); the gradients go to the inputs named in `grads`, None to the others. Ops whose backward
  needs more (saved outputs) pass `setup_context` and `autograd` functions of their own.
- An op built on other fused ops (`kernels=()`: `k` holds only `k.backend`) may have no backward op: its
  autograd (`@op.autograd(setup_context=...)`) runs those ops' custom ops.
- `select(device, supported)` picks the backend (`select_backend`), once per trace under torch.compile.
"""
import functools
import importlib
import inspect
import types

import torch

from ..backends import select_backend

FUSED_BACKENDS = ("cpu", "cuda", "triton")
# Every backend: the fused ones and the reference.
ALL_BACKENDS = FUSED_BACKENDS + ("reference",)


@torch.compiler.assume_constant_result
def _select(op: str, device: torch.device, supported: tuple[str, ...]) -> str:
    # Under torch.compile the choice is made once, at trace time, and baked into the graph.
    return select_backend(op, device, supported)


class FusedOp:
    """An op's fused implementation: its backend table, custom ops and autograd (see the module docstring)."""

    def __init__(self, name: str, *, kernels: tuple[str, ...] = (), triton_module: str | None = None,
                 supported: tuple[str, ...] = ALL_BACKENDS):
        self.name = name
        self.kernel_names = kernels
        self.triton_module = triton_module or name
        self.supported = supported
        self.op = None
        self.backward_op = None
        self._kernels = functools.lru_cache(maxsize=None)(self._load_kernels)

    def select(self, device: torch.device, supported: tuple[str, ...] | None = None) -> str:
        """The backend that runs these inputs: `supported` (default: the op's) narrows it for them."""
        return _select(self.name, device, self.supported if supported is None else supported)

    def kernels(self, backend: str) -> types.SimpleNamespace:
        """The kernels of a fused backend, looked up once."""
        return self._kernels(backend)

    def _load_kernels(self, backend: str) -> types.SimpleNamespace:
        if backend == "triton":
            if not self.kernel_names:  # an op built on other fused ops has no module of its own
                return types.SimpleNamespace(backend=backend)
            module = importlib.import_module(f"mcmri_fast.kernels.{self.triton_module}")
            return types.SimpleNamespace(backend=backend, **{n: getattr(module, n) for n in self.kernel_names})
        if backend in ("cpu", "cuda"):
            return types.SimpleNamespace(backend=backend,
                                         **{n: getattr(torch.ops.mcmri_fast, n) for n in self.kernel_names})
        raise ValueError(f"{self.name}: {backend!r} is not a fused backend")

    def __call__(self, *args, backend: str):
        return self.op(*args, backend)

    # --- building the custom ops

    def _custom_op(self, qualname: str, fn):
        """The custom op of fn(k, *args): its schema is fn's signature without k, plus `backend: str`."""
        signature = inspect.signature(fn)
        parameters = list(signature.parameters.values())[1:]
        parameters.append(inspect.Parameter("backend", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str))

        def implementation(*args):
            return fn(self.kernels(args[-1]), *args[:-1])

        implementation.__signature__ = signature.replace(parameters=parameters)
        implementation.__name__ = qualname.split("::")[-1]
        implementation.__doc__ = fn.__doc__
        return torch.library.custom_op(qualname, implementation, mutates_args=())

    def forward(self, fn):
        """Decorator: the forward, fn(k, *inputs) → outputs."""
        self.op = self._custom_op(f"mcmri_fast::{self.name}", fn)
        self._input_names = list(inspect.signature(fn).parameters)[1:]
        return fn

    def fake(self, fn=None, *, backend: bool = False):
        """Decorator: the forward's fake (meta) outputs, fn(*inputs); `@op.fake(backend=True)`:
        fn(*inputs, backend), for outputs whose shapes or strides depend on the backend."""
        if fn is None:
            return functools.partial(self.fake, backend=backend)
        self.op.register_fake(fn if backend else lambda *args: fn(*args[:-1]))
        return fn

    def backward(self, *, saves: tuple[str, ...] = (), keeps: tuple[str, ...] = (), grads: tuple[str, ...] = (),
                 need_flags: bool = True, setup_context=None, autograd=None):
        """Decorator: the backward op fn(k, *grad_outputs, *saved, *kept[, *need flags]) → one gradient per
        name of `grads` (an empty tensor for one not asked for). `setup_context(ctx, inputs, output)` and
        `autograd(ctx, *grad_outputs)` replace the generic wiring where an op needs more."""

        def register(fn):
            self.backward_op = self._custom_op(f"mcmri_fast::{self.name}_backward", fn)
            names = self._input_names
            positions = [names.index(name) for name in grads]

            def generic_setup_context(ctx, inputs, output):
                ctx.save_for_backward(*(inputs[names.index(name)] for name in saves))
                ctx.kept = tuple(inputs[names.index(name)] for name in keeps)
                ctx.backend = inputs[-1]

            def generic_autograd(ctx, *grad_outputs):
                needs = [ctx.needs_input_grad[p] for p in positions]
                flags = tuple(needs) if need_flags else ()
                computed = self.backward_op(*grad_outputs, *ctx.saved_tensors, *ctx.kept, *flags, ctx.backend)
                if isinstance(computed, torch.Tensor):
                    computed = (computed,)
                result = [None] * (len(names) + 1)  # + the backend
                for position, need, grad in zip(positions, needs, computed):
                    result[position] = grad if need else None
                return tuple(result)

            self.op.register_autograd(autograd or generic_autograd, setup_context=setup_context or generic_setup_context)
            return fn

        return register

    def autograd(self, *, setup_context):
        """Decorator: the autograd fn(ctx, *grad_outputs) of an op without a backward op of its own (its
        backward runs other fused ops), with `setup_context(ctx, inputs, output)`."""

        def register(fn):
            self.op.register_autograd(fn, setup_context=setup_context)
            return fn

        return register

    def backward_fake(self, fn=None, *, backend: bool = False):
        """Decorator: the backward op's fake outputs, fn(*its arguments without k) (and the backend's
        name last with `backend=True`, as for `fake`)."""
        if fn is None:
            return functools.partial(self.backward_fake, backend=backend)
        self.backward_op.register_fake(fn if backend else lambda *args: fn(*args[:-1]))
        return fn


def gradient_fake(like: torch.Tensor, need: bool) -> torch.Tensor:
    """The fake of a gradient output: `like`'s shape, contiguous, where asked for, else an empty tensor."""
    return torch.empty_like(like, memory_format=torch.contiguous_format) if need else like.new_empty(0)
