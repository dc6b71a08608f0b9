"""Build of mcmri_fast and its native extension mcmri_fast._C.

The CPU part of the extension always builds. The CUDA part builds when the installed torch has CUDA
and nvcc is found. Environment switches:
  MCMRI_FAST_NO_NATIVE=1   build no extension at all (the library then runs on its reference path)
  MCMRI_FAST_NO_CUDA=1     build the CPU part only, even with a CUDA torch
  TORCH_CUDA_ARCH_LIST     the GPU architectures to compile for (torch's own variable)
Install with `pip install --no-build-isolation -e .` so the extension builds against the installed torch.
"""
import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "0").lower() not in ("", "0", "false", "no")


def _extensions():
    if _flag("MCMRI_FAST_NO_NATIVE"):
        return [], {}
    import torch
    from torch.utils import cpp_extension

    # csrc/*.cpp: ops.cpp (the TORCH_LIBRARY block) and one <op>_ops.cpp per later op (TORCH_LIBRARY_FRAGMENT)
    sources = sorted(glob.glob("csrc/*.cpp", root_dir=ROOT)) + sorted(glob.glob("csrc/cpu/*.cpp", root_dir=ROOT))
    cxx_flags = ["-O3", "-fopenmp"]  # the C++ standard is torch's choice (C++20 for torch 2.13)
    with_cuda = (
        torch.version.cuda is not None
        and cpp_extension.CUDA_HOME is not None
        and not _flag("MCMRI_FAST_NO_CUDA")
    )
    if with_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cpp", root_dir=ROOT))
        sources += sorted(glob.glob("csrc/cuda/*.cu", root_dir=ROOT))
        ext = cpp_extension.CUDAExtension(
            "mcmri_fast._C",
            sources,
            define_macros=[("MCMRI_FAST_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = cpp_extension.CppExtension(
            "mcmri_fast._C", sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"]
        )
    return [ext], {"build_ext": _build_ext_class(cpp_extension.BuildExtension, torch.__version__, with_cuda)}


def _build_ext_class(base, torch_version: str, with_cuda: bool):
    """torch's BuildExtension with two changes: a faster build, and rebuilds that reuse its objects.

    - The objects go to build/<python>-torch<version>[-cuda]/ in the source tree, where the next build
      finds them: pip's editable install otherwise compiles in a fresh temporary folder each time, so the
      README's second command rebuilt everything the first had built. ninja (torch's default) then
      recompiles only what changed, tracking headers too.
    - No -g: Python's own CFLAGS add debug information, which made each file's compile 1.5× slower and
      its object 40× larger (csrc/cpu/frequency.cpp: 52 s against 34 s, 18 MB against 0.5 MB, with
      torch/extension.h), for no use in a release build.
    """

    class BuildExtension(base):
        def finalize_options(self):
            super().finalize_options()
            tag = f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch_version}" + ("-cuda" if with_cuda else "")
            self.build_temp = os.path.join(ROOT, "build", tag)

        def build_extensions(self):
            self.compiler.set_executable("compiler_so", [f for f in self.compiler.compiler_so if f != "-g"])
            super().build_extensions()

    return BuildExtension


ext_modules, cmdclass = _extensions()

setup(
    packages=["mcmri_fast", "mcmri_fast.kernels"]
    + ["mcmri_fast." + p for p in ("reference", "ops", "nn", "data", "models")],
    package_dir={"mcmri_fast.kernels": "kernels"},
    # the builtin dataset and its license notice
    package_data={"mcmri_fast.data": ["assets/*"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
