// kdq_tf's fused LUT convolution (kdq_lut_conv.cc): model_ops.h registers it as the custom
// operator KDQ_LUT_CONV, which kdq_tf.device.fuse writes in place of DECODE -> CONV_2D.
#ifndef KDQ_LUT_CONV_H_
#define KDQ_LUT_CONV_H_

#include "tensorflow/lite/micro/micro_common.h"

namespace kdq {
const TFLMRegistration* Register_LUT_CONV();
}  // namespace kdq

#endif  // KDQ_LUT_CONV_H_
