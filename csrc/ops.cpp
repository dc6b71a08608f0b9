// The library mcmri_fast (its own ops below) and the Python module mcmri_fast._C. Each op's schemas
// are in csrc/<op>.h (op_schemas.h), registered with its CPU and CUDA implementations by the files that
// include it; importing mcmri_fast._C runs these registrations.
#include <Python.h>
#include <torch/library.h>

#include "cpu/cpu_isa.h"

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
}

// The Python module mcmri_fast._C has no functions: importing it loads this library, whose static
// initialisers register the ops. Plain CPython API, so no file needs torch/extension.h (pybind11,
// torch/python.h and the whole C++ frontend): with it each file compiled 2.5× slower than with ATen.h.
PyMODINIT_FUNC PyInit__C() {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
