// Which implementation of a kernel a call runs. Every kernel family's options carry one.
#pragma once

namespace attnkit {

enum class Backend {
  kAuto,       // the fast kernel (SIMD, tiled or chunked, threaded)
  kReference,  // the plain double-accumulating twin in namespace ref, same semantics
};

}  // namespace attnkit
