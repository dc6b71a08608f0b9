// The grain of the CPU ops' at::parallel_for loops over rows or planes.
#pragma once
#include <algorithm>
#include <cstdint>

namespace mcmri_fast::cpu {

// Items per chunk for about 32k elements a chunk: thread start-up stays small against a chunk's work,
// and an item as large as that (a 240² plane) is a chunk of its own, so 64 planes split over every thread.
inline int64_t parallel_grain(int64_t elements_per_item) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(elements_per_item, 1));
}

}  // namespace mcmri_fast::cpu
