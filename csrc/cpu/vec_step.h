// One vector step of the row loops of the elementwise CPU kernels (gated_fusion.cpp, prelu.cpp): loads
// and stores of float16 / bfloat16 widen to and narrow from float vectors. Compiled in each ISA build
// like the kernels that include it (see isa_builds.h).
#pragma once
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <tuple>
#include <type_traits>

namespace mcmri_fast::cpu::MCMRI_CPU_ISA {

using at::vec::Vectorized;

// One vector step of the row loops: Step::kSize elements of scalar_t, loaded as Step::kParts vectors of
// the compute type (float16 / bfloat16 widen to two float vectors). n < kSize loads / stores a tail.
template <typename scalar_t, typename = void>
struct Step {
  using Vec = Vectorized<scalar_t>;
  static constexpr int kParts = 1;
  static constexpr int64_t kSize = Vec::size();
  static void load(const scalar_t* p, int64_t n, Vec (&v)[kParts]) { v[0] = n == kSize ? Vec::loadu(p) : Vec::loadu(p, n); }
  static void store(scalar_t* p, int64_t n, const Vec (&v)[kParts]) {
    if (n == kSize) {
      v[0].store(p);
    } else {
      v[0].store(p, n);
    }
  }
};

template <typename scalar_t>
struct Step<scalar_t, std::enable_if_t<at::is_reduced_floating_point_v<scalar_t>>> {
  using Vec = Vectorized<float>;
  using Raw = Vectorized<scalar_t>;
  static constexpr int kParts = 2;
  static constexpr int64_t kSize = Raw::size();
  static_assert(kSize == 2 * Vec::size());
  static void load(const scalar_t* p, int64_t n, Vec (&v)[kParts]) {
    std::tie(v[0], v[1]) = at::vec::convert_to_float<scalar_t>(n == kSize ? Raw::loadu(p) : Raw::loadu(p, n));
  }
  static void store(scalar_t* p, int64_t n, const Vec (&v)[kParts]) {
    const Raw raw = at::vec::convert_from_float<scalar_t>(v[0], v[1]);
    if (n == kSize) {
      raw.store(p);
    } else {
      raw.store(p, n);
    }
  }
};

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA
