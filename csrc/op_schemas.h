// How an op's header (csrc/<op>.h) defines its schemas: MCMRI_FAST_OP_SCHEMAS(prelu) { m.def(...); }.
// The header is included by the op's CPU file and its CUDA file; the schemas are registered once
// however many files include it, through a C++17 inline variable (one initialisation per program),
// and each backend file registers its implementations under its dispatch key (TORCH_LIBRARY_IMPL).
#pragma once
#include <torch/library.h>

#include <optional>

#define MCMRI_FAST_OP_SCHEMAS(op)                                                                            \
  inline void op##_schemas(torch::Library& m);                                                               \
  inline const torch::detail::TorchLibraryInit op##_schemas_registration{                                    \
      torch::Library::FRAGMENT, &op##_schemas, "mcmri_fast", std::nullopt, __FILE__, __LINE__};             \
  inline void op##_schemas(torch::Library& m)
