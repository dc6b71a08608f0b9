"""The CPU instruction-set switches (mcmri_fast.cpu_isa): each cap is honoured, a bad value is a clear
error, and ops whose fast path needs a higher ISA take the next path with the same results. The choice is
made once per process, so each case runs in a fresh one."""
import os

import pytest
import torch

from mcmri_fast import _native, cpu_isa

pytestmark = pytest.mark.skipif(not _native.native_loaded(), reason="needs the native extension")


def _kernel_isa(run_python, **env: str) -> str:
    return run_python("from mcmri_fast import cpu_isa; print(cpu_isa.kernel_isa())", **env).strip()


def _has_avx2() -> bool:
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def test_the_library_cap_is_honoured(run_python):
    assert _kernel_isa(run_python, MCMRI_FAST_CPU_ISA="baseline") == "baseline"
    assert _kernel_isa(run_python, MCMRI_FAST_CPU_ISA="BASELINE", ATEN_CPU_CAPABILITY="avx2") == "baseline"
    if _has_avx2():
        assert _kernel_isa(run_python, MCMRI_FAST_CPU_ISA="avx2") == "avx2"
        # a cap above what the CPU has gives what it has
        assert _kernel_isa(run_python, MCMRI_FAST_CPU_ISA="avx512") in ("avx2", "avx512")


def test_unset_it_follows_atens_capability(run_python):
    assert _kernel_isa(run_python, ATEN_CPU_CAPABILITY="default") == "baseline"
    if _has_avx2():
        assert _kernel_isa(run_python, ATEN_CPU_CAPABILITY="avx2") == "avx2"


def test_a_bad_value_is_a_clear_error_for_every_caller(run_python):
    script = """
import torch
from mcmri_fast import cpu_isa
from mcmri_fast.ops import prelu
try:
    cpu_isa.kernel_isa()
except ValueError as exc:
    print("isa:", exc)
try:
    prelu(torch.randn(1, 2, 3, 3), torch.full((1,), 0.25))
except RuntimeError as exc:
    print("op:", str(exc).splitlines()[0])
"""
    lines = run_python(script, MCMRI_FAST_CPU_ISA="avx3").splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "MCMRI_FAST_CPU_ISA must be baseline, avx2 or avx512, got 'avx3'" in line


def test_in_process_query_matches_the_process_caps():
    isa = cpu_isa.kernel_isa()
    assert isa in ("baseline", "avx2", "avx512")
    cap = os.environ.get("MCMRI_FAST_CPU_ISA")
    if cap:
        order = ("baseline", "avx2", "avx512")
        assert order.index(isa) <= order.index(cap.lower())
    ops = [op for op, _ in cpu_isa.cpu_fast_paths()]
    assert "conv3x3" in ops and "conv1x1" in ops


def test_bfloat16_products_without_onednn_support_match(run_python):
    """oneDNN has no bfloat16 inner product at AVX2: conv1x1 must find that out once and take
    torch.matmul, with the same results (what crashed FSMNet under bfloat16 autocast on AVX2 CPUs)."""
    script = """
import torch
from mcmri_fast.ops import conv1x1
from mcmri_fast.ops.conv1x1 import onednn_supports
from mcmri_fast import reference, use_backend
torch.manual_seed(0)
x = torch.randn(2, 16, 7, 9).bfloat16().requires_grad_()
w = (torch.randn(8, 16, 1, 1) / 4).bfloat16().requires_grad_()
with use_backend("cpu"):
    out = conv1x1(x, w)
out.float().square().sum().backward()
expected = reference.conv1x1(x.detach().float(), w.detach().float())
torch.testing.assert_close(out.float(), expected, atol=5e-2, rtol=5e-2)
assert x.grad is not None and w.grad is not None
print(onednn_supports(torch.bfloat16), onednn_supports(torch.float32))
"""
    out = run_python(script, ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2", MCMRI_FAST_CPU_ISA="avx2")
    bf16, fp32 = out.split()
    assert bf16 == "False" and fp32 == "True"


def test_info_names_the_isa_and_paths(run_python):
    out = run_python("from mcmri_fast.workflows.cli import main; main(['info'])", MCMRI_FAST_CPU_ISA="baseline")
    assert "mcmri_fast kernels: baseline" in out
    assert "MCMRI_FAST_CPU_ISA=baseline" in out
    assert "conv3x3" in out and "no Winograd kernel for this ISA" in out
