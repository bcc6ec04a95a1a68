// kdq_tf's LUT decoder for the TFLM_DECODE operator (kdq_decode.cc): model_ops.h registers it
// under that name instead of TFLM's larger kernel. DecodeChannels is shared with the fused LUT
// convolution (kdq_lut_conv.cc), which decodes a few output channels at a time.
#ifndef KDQ_DECODE_H_
#define KDQ_DECODE_H_

#include <cstdint>

#include "tensorflow/lite/micro/micro_common.h"

namespace kdq {
const TFLMRegistration* Register_DECODE();

// Reads the MSB-first index stream of `bits`-bit indices front to back, from bit `first_bit`.
class Indices {
 public:
  Indices(const uint8_t* p, uint32_t bits, uint32_t first_bit = 0)
      : p_(p + first_bit / 8), bits_(bits), mask_((1u << bits) - 1) {
    if (first_bit % 8 != 0) {  // start inside a byte: its leading bits are someone else's
      acc_ = *p_++;
      have_ = 8 - first_bit % 8;
    }
  }
  uint32_t Next() {
    if (have_ < bits_) {
      acc_ = ((acc_ & ((1u << have_) - 1)) << 8) | *p_++;
      have_ += 8;
    }
    have_ -= bits_;
    return (acc_ >> have_) & mask_;
  }

 private:
  const uint8_t* p_;
  uint32_t bits_, mask_, acc_ = 0, have_ = 0;
};

// Decodes channels [first, first + count) of an int8 tensor quantized on its first axis, each
// `per_channel` consecutive elements, into `out`. `entries`: bytes per value table, one table
// per channel; 0 when one table serves the whole tensor.
void DecodeChannels(const uint8_t* indices, uint32_t bits, const uint8_t* tables,
                    uint32_t entries, uint32_t per_channel, uint32_t first, uint32_t count,
                    int8_t* out);
}  // namespace kdq

#endif  // KDQ_DECODE_H_
