// Schemas of the mcmri_fast:: C++ ops and the registration of their CPU and CUDA implementations.
// Importing mcmri_fast._C runs these registrations.
#include <Python.h>
#include <torch/library.h>

#include "cpu/cpu_isa.h"
#include "cpu/data_consistency.h"
#ifdef MCMRI_FAST_WITH_CUDA
#include "cuda/data_consistency_binding.h"
#endif

TORCH_LIBRARY(mcmri_fast, m) {
  // What was built and what runs: whether the CUDA kernels were compiled in, and the instruction set
  // of the CPU kernels in this process (cpu_isa.h; "baseline", "avx2" or "avx512").
  m.def("built_with_cuda() -> bool", [] {
#ifdef MCMRI_FAST_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
  m.def("cpu_kernel_isa() -> str", [] { return std::string(mcmri_fast::cpu::kernel_isa_name()); });
  // Spectral blend of data consistency, in place on `spec` (see mcmri_fast/ops/data_consistency.py):
  //   spec[b,c,i,j] += w[c] * m * (ph[i] * pw[j] * src[b,c,i',j'] - spec[b,c,i,j]),  m = mask[b,i',j']
  //   with i' = (i + shift_h) mod H, j' = (j + shift_w) mod W. spec [B, C, H, W] is contiguous;
  //   src [B, C, H, W], mask uint8 [B, H, W] and weight [C] may have any strides, 0 included
  //   (broadcasting is expressed by expand), so FFT outputs are read in the layout they come in.
  m.def(
      "dc_blend_(Tensor(a!) spec, Tensor src, Tensor mask, Tensor weight, Tensor phase_h, "
      "Tensor phase_w, int shift_h, int shift_w) -> ()");
  // Its backward: grad_spec <- (1 - w m) grad_spec in place (contiguous). If grad_src is given
  // ([B, C, H, W], any non-overlapping strides) every element is written: conj(ph pw) w m g at the
  // source positions. Returns per-row partial sums of the weight gradient [B, C, R] if spec
  // (contiguous, like grad_spec) is given, else an empty tensor; sum over dims 0 and 2 per channel.
  m.def(
      "dc_blend_backward_(Tensor(a!) grad_spec, Tensor src, Tensor mask, Tensor weight, Tensor phase_h, "
      "Tensor phase_w, int shift_h, int shift_w, Tensor? spec, Tensor(b!)? grad_src) -> Tensor");
  // The same pair for 1-D column masks on CPU, visiting only the sampled columns: columns (int64 [n],
  // increasing) lists the source columns j'; src [B, C, H, n] holds ifft_H(k0) at those columns and
  // mask is uint8 [B, W]. The forward writes spec's values before the blend at (i, j) to kept
  // ([B, C, H, n], contiguous) when given, which the backward reads as `kept` for the weight gradient;
  // grad_src is [B, C, H, n]. Per-column buffers are a quarter of the full ones at 4x acceleration.
  m.def(
      "dc_blend_columns_(Tensor(a!) spec, Tensor src, Tensor columns, Tensor mask, Tensor weight, "
      "Tensor phase_h, Tensor phase_w, int shift_h, int shift_w, Tensor(b!)? kept) -> ()");
  m.def(
      "dc_blend_columns_backward_(Tensor(a!) grad_spec, Tensor src, Tensor columns, Tensor mask, Tensor weight, "
      "Tensor phase_h, Tensor phase_w, int shift_h, int shift_w, Tensor? kept, Tensor(b!)? grad_src) -> Tensor");
}

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("dc_blend_", &mcmri_fast::cpu::dc_blend_);
  m.impl("dc_blend_backward_", &mcmri_fast::cpu::dc_blend_backward_);
  m.impl("dc_blend_columns_", &mcmri_fast::cpu::dc_blend_columns_);
  m.impl("dc_blend_columns_backward_", &mcmri_fast::cpu::dc_blend_columns_backward_);
}

#ifdef MCMRI_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("dc_blend_", &mcmri_fast::cuda::dc_blend_);
  m.impl("dc_blend_backward_", &mcmri_fast::cuda::dc_blend_backward_);
}
#endif

// The Python module mcmri_fast._C has no functions: importing it loads this library, whose static
// initialisers register the ops above. Plain CPython API, so no file needs torch/extension.h (pybind11,
// torch/python.h and the whole C++ frontend): with it each file compiled 2.5× slower than with ATen.h.
PyMODINIT_FUNC PyInit__C() {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
