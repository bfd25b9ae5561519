// The layer interface every attention block implements (layer 4 of docs/ARCHITECTURE.md), and the
// stack runner that chains layers into a model body (residual stream + RMSNorm, no MLP).
//
// CONTRACT FOR IMPLEMENTERS (GQA-family, MLA, and the linear/recurrent layers: Gated DeltaNet,
// KDA, ... — a hybrid stack is just a list of Layer objects):
//
//  * Hidden states are a TensorView<float> of shape [batch, 1, tokens, hidden] whose rows are
//    contiguous: stride[3] == 1 and stride[2] == hidden (so batch·tokens rows of `hidden` floats
//    can be handed to BLAS as one row-major matrix when stride[0] == tokens·hidden). Layers check
//    this with CheckHidden() below.
//  * Forward(x, position, out) processes `tokens` NEW tokens at absolute positions
//    position … position + tokens − 1, attends to (or updates its state with) everything seen
//    before, and appends what it needs to its cache / state. One call with T tokens and T calls
//    of one token must give the same per-token outputs (up to rounding): that is what
//    "prefill then decode == full pass" tests check for every layer kind.
//  * `position` must equal tokens_seen(); anything else (a decode position that skips or
//    repeats) throws attnkit::Error. Past the cache's capacity → attnkit::Error.
//  * out has the same shape as x and must not overlap it. The layer does not add the residual;
//    the Stack does.
//  * CacheBytes() is the memory the layer holds for past tokens (KV cache, latent cache, or
//    recurrent state), allocated bytes, not counting weights. WeightBytes() counts parameters.
//  * Reset() forgets all past tokens (tokens_seen() back to 0) and keeps the weights.
//  * A Forward that throws changes nothing; UndoForward() takes back the last one that did not
//    (a Stack rolls back its earlier layers with it when a later layer throws).
//  * Layers are not thread-safe; they may use OpenMP and BLAS internally (never BLAS inside an
//    OpenMP region).
//
// TRAINING (docs/training.md). A trainable layer also implements
//  * TrainForward(x, out): the same function as Forward over whole sequences that start at
//    position 0 (causal), WITHOUT the cache: tokens_seen() and the cache are untouched. It
//    returns a TrainTape holding what the backward needs (activations, LSEs; the layer's own
//    copies, so the caller may free or reuse x and out).
//  * TrainBackward(tape, dout, dx): overwrites dx (x's shape; a view with data == nullptr skips
//    it) with ∂loss/∂x given dout = ∂loss/∂out, and ACCUMULATES ∂loss/∂w into the gradient buffer
//    of every parameter (so micro-batches add up; ZeroGrad() clears them). A tape is used once:
//    a second backward on it, a tape from another layer, or a dout of another shape throws
//    attnkit::Error naming the argument, before anything is written.
//  * Params(): every parameter by name, shape, value pointer and gradient pointer (the gradient
//    buffers are allocated, zeroed, on the first call). An optimiser updates the values in
//    place; a cache filled before such an update is stale (call Reset()).
// Exact attention layers never hold a tokens × tokens matrix in the tape or the backward.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/core/tensor.h"

namespace attnkit {

// One parameter of a trainable layer: `value` and `grad` each point at size() floats laid out
// row-major in `shape` (a Matrix [rows, cols], a vector [n]). Both stay valid while the layer
// lives and its configuration is unchanged.
struct Param {
  std::string name;  // unique in its layer, e.g. "w_q", "q_norm"; a Stack prefixes "layers.3."
  std::vector<int64_t> shape;
  float* value = nullptr;
  float* grad = nullptr;
  int64_t size() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

struct Matrix;  // attnkit/layers/ops.h

// For a layer's Params(): appends a weight and its gradient buffer (same shape) by name, as
// [rows, cols] or [n]; an absent (empty) weight is skipped.
void AppendParam(std::vector<Param>& params, const char* name, Matrix& value, Matrix& grad);
void AppendParam(std::vector<Param>& params, const char* name, std::vector<float>& value,
                 std::vector<float>& grad);

// What a training forward saved for its backward. Layer-specific contents; the base records the
// owner, the input's shape and whether a backward has consumed it.
class TrainTape {
 public:
  virtual ~TrainTape() = default;
  const void* owner = nullptr;     // the layer that wrote it
  std::array<int64_t, 4> shape{};  // x's (and out's) shape
  bool consumed = false;           // set by the backward that used it
  // Throws attnkit::Error (naming `fn`) unless this tape came from `layer`, is unused, and dout
  // and dx have its shape (dx may have data == nullptr). Marks nothing: the caller sets consumed
  // once its own checks have passed.
  void Check(const char* fn, const void* layer, TensorView<const float> dout,
             TensorView<float> dx) const;
};

class Layer {
 public:
  virtual ~Layer() = default;

  // Short kind name, e.g. "gqa", "mla", "gated_deltanet", "kda".
  virtual std::string Kind() const = 0;
  // One line with the configuration, e.g. "gqa(hq=32,hkv=8,d=128,window=0,rope=half)".
  virtual std::string Describe() const = 0;
  virtual int64_t hidden() const = 0;

  // x [batch, 1, tokens, hidden], out [batch, 1, tokens, hidden]; positions start at `position`.
  virtual void Forward(TensorView<const float> x, int64_t position, TensorView<float> out) = 0;

  virtual int64_t tokens_seen() const = 0;
  virtual void Reset() = 0;
  virtual size_t CacheBytes() const = 0;
  virtual size_t WeightBytes() const = 0;

  // Puts the layer back exactly as it was before its last Forward (cache or state and
  // tokens_seen, bit for bit: the next calls give what they would have given had that Forward
  // never run), so that a Stack whose layer i fails can roll back layers 0 … i − 1. Only the
  // most recent Forward, and only if it succeeded; a failed Forward, Reset() or an undo leave
  // nothing to undo. Returns false (changing nothing) when there is nothing to undo or the layer
  // does not support undo (the default, for layers defined outside attnkit). Never throws.
  virtual bool UndoForward() noexcept { return false; }

  // Training (see the contract above). The defaults throw attnkit::Error ("<kind> cannot be
  // trained yet"); trainable() says whether a layer overrides them.
  virtual bool trainable() const { return false; }
  virtual std::unique_ptr<TrainTape> TrainForward(TensorView<const float> x, TensorView<float> out);
  virtual void TrainBackward(TrainTape& tape, TensorView<const float> dout, TensorView<float> dx);
  virtual std::vector<Param> Params();
  // Sets every parameter's gradient to zero.
  void ZeroGrad();

  // Conveniences over Forward().
  // Prefill (or a chunk of it): the tokens follow everything seen so far.
  void Prefill(TensorView<const float> x, TensorView<float> out) { Forward(x, tokens_seen(), out); }
  // One token at `position` (must be tokens_seen()): x [batch, 1, 1, hidden].
  void Decode(TensorView<const float> x, int64_t position, TensorView<float> out);
};

// Throws attnkit::Error unless x and out are valid hidden-state views for `layer` as described
// above (same shape, [batch, 1, tokens, hidden], contiguous rows, batch stride tokens·hidden).
void CheckHidden(const char* fn, int64_t hidden, TensorView<const float> x, TensorView<float> out);
// Throws attnkit::Error unless position == tokens_seen ("a decode position that skips").
void CheckPosition(const char* fn, int64_t position, int64_t tokens_seen);

// Runs `layer` over x [batch, 1, tokens, hidden] in calls of `chunks[i]` tokens each (summing to
// tokens; positions continue from layer.tokens_seen()) and returns the per-token outputs
// [batch, 1, tokens, hidden]. Tests and tools use it to check prefill + decode == full pass.
Tensor<float> ForwardInChunks(Layer& layer, const Tensor<float>& x,
                              const std::vector<int64_t>& chunks);
// {prefill, 1, 1, …}: a prefill of `prefill` tokens (none if 0), then single tokens up to total.
std::vector<int64_t> PrefillThenDecodeChunks(int64_t prefill, int64_t total);
// Tokens [t0, t0 + n) of every batch entry of x [batch, 1, tokens, hidden], as a new tensor.
Tensor<float> SliceTokens(const Tensor<float>& x, int64_t t0, int64_t n);

// N layers with a pre-norm residual stream: h ← h + layer_i(RMSNorm(h) ⊙ w_i), then a final
// RMSNorm. No MLP: the stack exists to run attention layers of different kinds together and
// measure them (prefill, decode, cache bytes).
class Stack {
 public:
  explicit Stack(int64_t hidden, float norm_eps = 1e-6f);

  // Adds a layer (its hidden size must match) with RMSNorm weights all ones.
  void Add(std::unique_ptr<Layer> layer);

  // x, out [batch, 1, tokens, hidden]; same position rules as Layer::Forward. A call that throws
  // (in any layer) leaves every layer as it was: the layers before the failing one are rolled
  // back with Layer::UndoForward().
  void Forward(TensorView<const float> x, int64_t position, TensorView<float> out);
  void Reset();

  int64_t hidden() const { return hidden_; }
  int64_t tokens_seen() const { return layers_.empty() ? seen_ : layers_[0]->tokens_seen(); }
  size_t CacheBytes() const;
  size_t WeightBytes() const;
  size_t num_layers() const { return layers_.size(); }
  Layer& layer(size_t i) { return *layers_.at(i); }
  std::string Describe() const;

  // Training, with the Layer contract above (docs/training.md): the same pre-norm residual
  // stream as Forward over whole sequences from position 0, chaining every layer's TrainForward /
  // TrainBackward; caches untouched. The tape holds each layer's tape and the residual stream
  // before each layer and before the final norm. Params() lists every layer's parameters as
  // "layers.<i>.<name>", the norm weights as "layers.<i>.norm" and "final_norm". A layer that is
  // not trainable makes these calls throw attnkit::Error naming it.
  // TrainBackward checks the tape, dout, dx and every layer's tape before writing anything; an
  // out-of-memory failure inside a layer's backward, after the layers above it have run, leaves
  // their gradients accumulated (ZeroGrad and repeat the step).
  bool trainable() const;
  std::unique_ptr<TrainTape> TrainForward(TensorView<const float> x, TensorView<float> out);
  void TrainBackward(TrainTape& tape, TensorView<const float> dout, TensorView<float> dx);
  std::vector<Param> Params();
  void ZeroGrad();

 private:
  void RollBack(size_t failed) noexcept;  // undoes layers [0, failed) after layer `failed` threw
  void RequireTrainable(const char* fn) const;
  void EnsureGrads();

  int64_t hidden_;
  float eps_;
  int64_t seen_ = 0;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<std::vector<float>> norms_;       // [num_layers][hidden]
  std::vector<float> final_norm_;               // [hidden]
  std::vector<std::vector<float>> norm_grads_;  // gradients of norms_ (allocated by EnsureGrads)
  std::vector<float> final_norm_grad_;
};

}  // namespace attnkit
