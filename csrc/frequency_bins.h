// The self-conjugate bins of a one-sided spectrum (see mcmri_fast.reference.frequency.self_conjugate_mask):
// for rfft2 of a real H x W signal, the half spectrum [..., H, W/2 + 1] is real at rows 0 and H/2 (even
// H) x columns 0 and W/2 (even W). spectrum_to_polar takes their imaginary part, rounding noise, as +0.
// Shared by the CPU and CUDA kernels (through csrc/frequency.h), hence host-and-device code; the Triton
// kernels (kernels/frequency.py) locate the same bins.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define MCMRI_FAST_HOST_DEVICE __host__ __device__
#else
#define MCMRI_FAST_HOST_DEVICE
#endif

namespace mcmri_fast::frequency {

struct SelfConjugateBins {
  int64_t rows = 0;          // H; 0: no signal width given, no bin is treated
  int64_t cols = 1;          // W/2 + 1
  int64_t nyquist_row = -1;  // H/2 for even H, else -1 (no such row)
  int64_t nyquist_col = -1;  // W/2 for even W, else -1

  MCMRI_FAST_HOST_DEVICE bool active() const { return rows > 0; }

  // Whether flat element i of a contiguous [..., rows, cols] buffer is one of the bins.
  MCMRI_FAST_HOST_DEVICE bool contains(int64_t i) const {
    const int64_t col = i % cols;
    const int64_t row = (i / cols) % rows;
    return (row == 0 || row == nyquist_row) && (col == 0 || col == nyquist_col);
  }
};

// The bins of a [..., height, width / 2 + 1] spectrum of a real height x width signal.
inline SelfConjugateBins self_conjugate_bins(int64_t height, int64_t width) {
  SelfConjugateBins bins;
  bins.rows = height;
  bins.cols = width / 2 + 1;
  bins.nyquist_row = height % 2 == 0 ? height / 2 : -1;
  bins.nyquist_col = width % 2 == 0 ? width / 2 : -1;
  return bins;
}

}  // namespace mcmri_fast::frequency
