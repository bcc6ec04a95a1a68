// kdq_tf's LUT decoder for the TFLM_DECODE operator (kdq_decode.cc): model_ops.h registers it
// under that name instead of TFLM's larger kernel.
#ifndef KDQ_DECODE_H_
#define KDQ_DECODE_H_

#include "tensorflow/lite/micro/micro_common.h"

namespace kdq {
const TFLMRegistration* Register_DECODE();
}  // namespace kdq

#endif  // KDQ_DECODE_H_
