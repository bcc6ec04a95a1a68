// A small LUT decoder for the TFLM_DECODE operator of `kdq_tf export --compress lut`.
//
// TFLM's own DECODE kernel handles LUT, Huffman and pruning, for bool, float and 8/16/32/64-bit
// integer outputs, with unrolled paths per bit width: about 21 KB of Cortex-M4 code, half of what
// 16-cluster LUT compression saves on small_cnn's weights. kdq_tf's models need one case: LUT
// tables of any element size, indices of 1-7 bits. This kernel reads the same tensors (the
// packed indices, and the ancillary tensor: a 16-byte header, then one value table per channel)
// and writes the same bytes, in under 2 KB.
//
// Layout, as TFLM's compression tool writes it:
//   ancillary[0] = 0 (LUT), [1] = 1 (header version), [4] = 1 (LUT version),
//   [5] & 7 = index bit width, [6] = entries per channel table; tables from byte 16, each entry
//   the output's element size. Indices are packed most significant bit first. A tensor
//   quantized per channel on its first axis has one table per block of elements; on its last
//   axis (depthwise kernels) the channel cycles with every element.
#include <cstdint>
#include <cstring>

#include "kdq_decode.h"
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"

namespace kdq {
namespace {

struct LutState {
  const uint8_t* indices;
  const uint8_t* tables;
  uint32_t count;         // elements in the output
  uint32_t channels;      // value tables
  uint32_t per_channel;   // consecutive elements per table (first axis); 0: the last axis
  uint32_t stride;        // entries per table
  uint32_t element_size;  // bytes per value
  uint32_t bits;
};

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  const int outputs = tflite::NumOutputs(node);
  TF_LITE_ENSURE(context, outputs > 0 && tflite::NumInputs(node) == 2 * outputs);
  tflite::MicroContext* micro = tflite::GetMicroContext(context);
  auto* states =
      static_cast<LutState*>(micro->AllocatePersistentBuffer(outputs * sizeof(LutState)));
  TF_LITE_ENSURE(context, states != nullptr);
  node->user_data = states;
  for (int i = 0; i < outputs; ++i) {
    TfLiteTensor* input = micro->AllocateTempInputTensor(node, 2 * i);
    TfLiteTensor* ancillary = micro->AllocateTempInputTensor(node, 2 * i + 1);
    TfLiteTensor* output = micro->AllocateTempOutputTensor(node, i);
    TF_LITE_ENSURE(context, input != nullptr && ancillary != nullptr && output != nullptr);
    const uint8_t* dcm = tflite::GetTensorData<uint8_t>(ancillary);
    // Only LUT (type 0), header and LUT version 1: anything else is a model this kernel was not
    // written for, and it says so rather than decode it wrongly.
    TF_LITE_ENSURE_MSG(context, dcm[0] == 0 && dcm[1] == 1 && dcm[4] == 1,
                       "kdq_decode: only LUT-compressed tensors (version 1)");
    LutState& s = states[i];
    s.indices = tflite::GetTensorData<uint8_t>(input);
    s.tables = dcm + 16;
    s.count = static_cast<uint32_t>(tflite::NumElements(output));
    s.bits = dcm[5] & 7;
    s.stride = dcm[6];
    s.element_size = static_cast<uint32_t>(tflite::TfLiteTypeGetSize(output->type));
    TF_LITE_ENSURE(context, s.bits >= 1 && s.element_size > 0);
    s.channels = 1;
    s.per_channel = s.count;
    if (output->quantization.type == kTfLiteAffineQuantization &&
        output->quantization.params != nullptr) {
      const auto* q = static_cast<const TfLiteAffineQuantization*>(output->quantization.params);
      s.channels = static_cast<uint32_t>(q->scale->size);
      if (s.channels > 1 && q->quantized_dimension == output->dims->size - 1) {
        s.per_channel = 0;
      } else {
        TF_LITE_ENSURE(context, q->quantized_dimension == 0);
        s.per_channel = s.count / s.channels;
      }
    }
    micro->DeallocateTempTfLiteTensor(input);
    micro->DeallocateTempTfLiteTensor(ancillary);
    micro->DeallocateTempTfLiteTensor(output);
  }
  return kTfLiteOk;
}

// One value per element: `size` bytes from the table of the element's channel. The int8 case
// (every kernel kdq_tf compresses) gets its own loops: a call to memcpy would cost more than the
// lookup.
template <uint32_t kSize>
inline void Put(uint8_t*& out, const uint8_t* table, uint32_t index, uint32_t size) {
  if (kSize == 1) {
    *out++ = table[index];
  } else {
    memcpy(out, table + index * size, size);
    out += size;
  }
}

template <uint32_t kSize>
void Decode(const LutState& s, uint8_t* out) {
  const uint32_t table_bytes = s.stride * s.element_size;
  if (s.per_channel == 0) {  // last axis: the channel cycles with every element
    Indices indices(s.indices, s.bits);
    for (uint32_t k = 0; k < s.count; k += s.channels) {
      const uint8_t* table = s.tables;
      for (uint32_t c = 0; c < s.channels; ++c, table += table_bytes) {
        Put<kSize>(out, table, indices.Next(), s.element_size);
      }
    }
    return;
  }
  if (kSize == 1) {
    DecodeChannels(s.indices, s.bits, s.tables, s.stride, s.per_channel, 0, s.channels,
                   reinterpret_cast<int8_t*>(out));
    return;
  }
  Indices indices(s.indices, s.bits);
  const uint8_t* table = s.tables;
  for (uint32_t c = 0; c < s.channels; ++c, table += table_bytes) {
    for (uint32_t n = s.per_channel; n > 0; --n) {
      Put<kSize>(out, table, indices.Next(), s.element_size);
    }
  }
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const auto* states = static_cast<const LutState*>(node->user_data);
  for (int i = 0; i < tflite::NumOutputs(node); ++i) {
    const LutState& s = states[i];
    uint8_t* out = static_cast<uint8_t*>(tflite::micro::GetEvalOutput(context, node, i)->data.data);
    if (s.element_size == 1) {
      Decode<1>(s, out);
    } else {
      Decode<0>(s, out);
    }
  }
  return kTfLiteOk;
}

}  // namespace

void DecodeChannels(const uint8_t* indices, uint32_t bits, const uint8_t* tables,
                    uint32_t entries, uint32_t per_channel, uint32_t first, uint32_t count,
                    int8_t* out) {
  const uint8_t* table = tables + first * entries;
  const uint32_t start_bit = first * per_channel * bits;
  if (bits == 4 && start_bit % 8 == 0 && per_channel % 2 == 0) {
    // 16 clusters, the usual case: two indices per byte, each channel starting on a byte.
    const uint8_t* p = indices + start_bit / 8;
    for (uint32_t c = 0; c < count; ++c, table += entries) {
      for (uint32_t n = per_channel / 2; n > 0; --n) {
        const uint8_t b = *p++;
        *out++ = static_cast<int8_t>(table[b >> 4]);
        *out++ = static_cast<int8_t>(table[b & 0x0F]);
      }
    }
    return;
  }
  Indices next(indices, bits, start_bit);
  for (uint32_t c = 0; c < count; ++c, table += entries) {
    for (uint32_t n = per_channel; n > 0; --n) *out++ = static_cast<int8_t>(table[next.Next()]);
  }
}

const TFLMRegistration* Register_DECODE() {
  static TFLMRegistration registration = tflite::micro::RegisterOp(nullptr, Prepare, Eval);
  return &registration;
}

}  // namespace kdq
