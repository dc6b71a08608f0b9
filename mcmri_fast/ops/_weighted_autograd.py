"""Autograd shared by the ops of the form op(x, weight, bias | None, backend) whose backward is a second
custom op (grad, x, weight, need_x, need_weight, need_bias, backend) → (grad_x, grad_weight, grad_bias),
an empty tensor for each gradient not asked for: conv1x1 and conv3x3."""
import torch


def backward_fake(x: torch.Tensor, weight: torch.Tensor, need_x: bool, need_weight: bool, need_bias: bool):
    """The fake (meta) outputs of such a backward op: x's and weight's shapes, [Co] for the bias."""
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format) if need_x else x.new_empty(0),
        torch.empty_like(weight, memory_format=torch.contiguous_format) if need_weight else x.new_empty(0),
        weight.new_empty(weight.shape[0]) if need_bias else x.new_empty(0),
    )


def register_autograd(op, backward_op) -> None:
    """Registers the autograd of custom op `op` through `backward_op`. The op saves x and weight only."""

    def setup_context(ctx, inputs, output):
        x, weight, bias, backend = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.backend = backend

    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        need_bias = need_bias and ctx.has_bias
        grad_x, grad_weight, grad_bias = backward_op(grad, x, weight, need_x, need_weight, need_bias, ctx.backend)
        return grad_x if need_x else None, grad_weight if need_weight else None, grad_bias if need_bias else None, None

    op.register_autograd(backward, setup_context=setup_context)
