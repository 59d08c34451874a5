// Declarations only: the part of Gloo's interface that c10d's ProcessGroupGloo.hpp names.
// The PyPI torch wheel ships libtorch with Gloo compiled in but not Gloo's headers; the shim
// never calls Gloo itself, so declaring these names is all it needs (see src/dist/README).
#pragma once
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
} // namespace gloo
