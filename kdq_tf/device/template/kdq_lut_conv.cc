// KDQ_LUT_CONV: a CONV_2D whose kernel stays LUT-compressed in flash and is decoded a few output
// channels at a time, into scratch memory, just before those channels are computed.
//
// Why: with TFLM's DECODE operator the whole decoded kernel lives in the arena beside the layer's
// input and output. On small_cnn's 64 -> 64 convolution over 7x7 maps that is 36,864 B of weights
// next to 6,272 B of activations, and it lifts the arena from 32.6 KB to 50.5 KB: LUT saved flash
// and spent more RAM than it saved. Here the arena holds one group of channels' weights and, when
// there is more than one group, that group's output, which kdq_tf.device.fuse sizes so that the
// layer stays within the model's activation peak where it can.
//
// kdq_tf.device.fuse writes the operator in place of a DECODE -> CONV_2D pair:
//   inputs:  0 input (int8), 1 the kernel's quantization (int8 [Cout, 1, 1, 1], per-channel
//            scales; its values are not read), 2 bias (int32, or none), 3 the packed indices,
//            4 DECODE's ancillary tensor (header + value tables, as kdq_decode.cc reads it);
//   output:  0 (int8);
//   options: 11 bytes: version 1, TfLitePadding, TfLiteFusedActivation, stride w, stride h,
//            dilation w, dilation h, kernel h, kernel w, channels per group (uint16 LE).
// The arithmetic per group is CONV_2D's own (CMSIS-NN's arm_convolve_wrapper_s8, or TFLM's
// reference ConvPerChannel), with the multipliers and bias of the group's channels, so the output
// is bit for bit the DECODE -> CONV_2D model's.
#include <cstdint>
#include <cstring>

#include "kdq_decode.h"
#include "kdq_lut_conv.h"
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/kernels/internal/reference/integer_ops/conv.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/kernels/padding.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"
#if defined(CMSIS_NN)
#include "Include/arm_nnfunctions.h"
#endif

namespace kdq {
namespace {

constexpr int kOptionBytes = 11;

struct OpData {
  uint8_t options[kOptionBytes];
  TfLitePaddingValues padding;
  int32_t input_zero_point, output_zero_point, act_min, act_max;
  int32_t* multiplier;  // per output channel
  int32_t* shift;
  // The kernel: packed indices and value tables, `per_channel` elements per output channel.
  const uint8_t* indices;
  const uint8_t* tables;
  uint32_t bits, entries, per_channel;
  int cout, group;
  int weights_idx, out_idx, nn_idx;  // scratch buffers; -1: none
};

uint32_t Group(const OpData& d) { return d.options[9] | (d.options[10] << 8); }

void* Init(TfLiteContext* context, const char* buffer, size_t length) {
  auto* d = static_cast<OpData*>(context->AllocatePersistentBuffer(context, sizeof(OpData)));
  if (d == nullptr || buffer == nullptr || length != kOptionBytes || buffer[0] != 1) {
    return nullptr;  // Prepare reports it
  }
  memcpy(d->options, buffer, kOptionBytes);
  return d;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  auto* d = static_cast<OpData*>(node->user_data);
  TF_LITE_ENSURE_MSG(context, d != nullptr, "KDQ_LUT_CONV: options missing or not version 1");
  TF_LITE_ENSURE(context, tflite::NumInputs(node) == 5 && tflite::NumOutputs(node) == 1);
  tflite::MicroContext* micro = tflite::GetMicroContext(context);
  TfLiteTensor* input = micro->AllocateTempInputTensor(node, 0);
  TfLiteTensor* quant = micro->AllocateTempInputTensor(node, 1);
  TfLiteTensor* bias = micro->AllocateTempInputTensor(node, 2);  // nullptr when absent
  TfLiteTensor* indices = micro->AllocateTempInputTensor(node, 3);
  TfLiteTensor* ancillary = micro->AllocateTempInputTensor(node, 4);
  TfLiteTensor* output = micro->AllocateTempOutputTensor(node, 0);
  TF_LITE_ENSURE(context, input != nullptr && quant != nullptr && indices != nullptr &&
                              ancillary != nullptr && output != nullptr);
  TF_LITE_ENSURE(context, input->type == kTfLiteInt8 && output->type == kTfLiteInt8);
  TF_LITE_ENSURE(context, input->dims->size == 4 && output->dims->size == 4);

  const uint8_t* o = d->options;
  const auto padding = static_cast<TfLitePadding>(o[1]);
  const auto activation = static_cast<TfLiteFusedActivation>(o[2]);
  const int kh = o[7], kw = o[8], cin = input->dims->data[3];
  int out_h = 0, out_w = 0;
  d->padding = tflite::ComputePaddingHeightWidth(o[4], o[3], o[6], o[5], input->dims->data[1],
                                                 input->dims->data[2], kh, kw, padding, &out_h,
                                                 &out_w);
  TF_LITE_ENSURE(context, out_h == output->dims->data[1] && out_w == output->dims->data[2]);
  d->cout = output->dims->data[3];
  TF_LITE_ENSURE(context, quant->dims->data[0] == d->cout);
  d->multiplier = static_cast<int32_t*>(
      context->AllocatePersistentBuffer(context, 2 * d->cout * sizeof(int32_t)));
  TF_LITE_ENSURE(context, d->multiplier != nullptr);
  d->shift = d->multiplier + d->cout;
  int32_t unused_multiplier;
  int unused_shift;
  TF_LITE_ENSURE_STATUS(tflite::PopulateConvolutionQuantizationParams(
      context, input, quant, bias, output, activation, &unused_multiplier, &unused_shift,
      &d->act_min, &d->act_max, d->multiplier, d->shift, d->cout));
  d->input_zero_point = input->params.zero_point;
  d->output_zero_point = output->params.zero_point;

  // The same ancillary layout kdq_decode.cc reads: LUT, header and LUT version 1.
  const uint8_t* dcm = tflite::GetTensorData<uint8_t>(ancillary);
  TF_LITE_ENSURE_MSG(context, dcm[0] == 0 && dcm[1] == 1 && dcm[4] == 1,
                     "KDQ_LUT_CONV: only LUT-compressed kernels (version 1)");
  d->indices = tflite::GetTensorData<uint8_t>(indices);
  d->tables = dcm + 16;
  d->bits = dcm[5] & 7;
  d->per_channel = static_cast<uint32_t>(kh * kw * cin);
  const auto* q = static_cast<const TfLiteAffineQuantization*>(quant->quantization.params);
  d->entries = q->scale->size > 1 ? dcm[6] : 0;  // one table per channel, or one for all
  TF_LITE_ENSURE(context, d->bits >= 1 &&
                              tflite::NumElements(indices) * 8 >= d->cout * d->per_channel * d->bits);

  d->group = static_cast<int>(Group(*d));
  if (d->group <= 0 || d->group > d->cout) d->group = d->cout;
  const int pixels = output->dims->data[0] * out_h * out_w;
  TF_LITE_ENSURE_STATUS(context->RequestScratchBufferInArena(
      context, d->group * d->per_channel, &d->weights_idx));
  d->out_idx = -1;
  if (d->group < d->cout) {  // a group's output, before it joins the others channel by channel
    TF_LITE_ENSURE_STATUS(
        context->RequestScratchBufferInArena(context, pixels * d->group, &d->out_idx));
  }
  d->nn_idx = -1;
#if defined(CMSIS_NN)
  cmsis_nn_conv_params conv;
  conv.input_offset = -d->input_zero_point;
  conv.output_offset = d->output_zero_point;
  conv.stride = {o[3], o[4]};
  conv.dilation = {o[5], o[6]};
  conv.padding = {d->padding.width, d->padding.height};
  conv.activation = {d->act_min, d->act_max};
  const cmsis_nn_dims in_dims = {input->dims->data[0], input->dims->data[1], input->dims->data[2],
                                 cin};
  const cmsis_nn_dims filter_dims = {d->group, kh, kw, cin};
  const cmsis_nn_dims out_dims = {output->dims->data[0], out_h, out_w, d->group};
  const int32_t nn_bytes =
      arm_convolve_wrapper_s8_get_buffer_size(&conv, &in_dims, &filter_dims, &out_dims);
  if (nn_bytes > 0) {
    TF_LITE_ENSURE_STATUS(context->RequestScratchBufferInArena(context, nn_bytes, &d->nn_idx));
  }
#endif
  for (TfLiteTensor* t : {input, quant, bias, indices, ancillary, output}) {
    if (t != nullptr) micro->DeallocateTempTfLiteTensor(t);
  }
  return kTfLiteOk;
}

// Output channels [first, first + n) into `out` ([pixels, n]) from their decoded `weights`.
void ConvGroup(TfLiteContext* context, const OpData& d, const TfLiteEvalTensor* input,
               const int32_t* bias, const TfLiteEvalTensor* output, int first, int n,
               const int8_t* weights, int8_t* out) {
  const uint8_t* o = d.options;
  const int* in = input->dims->data;
  const int kh = o[7], kw = o[8];
#if defined(CMSIS_NN)
  cmsis_nn_context ctx = {d.nn_idx >= 0 ? context->GetScratchBuffer(context, d.nn_idx) : nullptr,
                          0};
  cmsis_nn_conv_params conv;
  conv.input_offset = -d.input_zero_point;
  conv.output_offset = d.output_zero_point;
  conv.stride = {o[3], o[4]};
  conv.dilation = {o[5], o[6]};
  conv.padding = {d.padding.width, d.padding.height};
  conv.activation = {d.act_min, d.act_max};
  cmsis_nn_per_channel_quant_params quant = {d.multiplier + first, d.shift + first};
  const cmsis_nn_dims in_dims = {in[0], in[1], in[2], in[3]};
  const cmsis_nn_dims filter_dims = {n, kh, kw, in[3]};
  const cmsis_nn_dims bias_dims = {1, 1, 1, n};
  const cmsis_nn_dims out_dims = {in[0], output->dims->data[1], output->dims->data[2], n};
  arm_convolve_wrapper_s8(&ctx, &conv, &quant, &in_dims, tflite::micro::GetTensorData<int8_t>(input),
                          &filter_dims, weights, &bias_dims, bias ? bias + first : nullptr,
                          &out_dims, out);
#else
  (void)context;
  tflite::ConvParams p = {};
  p.padding_type = tflite::PaddingType::kSame;  // unused: the padding values below decide
  p.padding_values.width = d.padding.width;
  p.padding_values.height = d.padding.height;
  p.stride_width = o[3];
  p.stride_height = o[4];
  p.dilation_width_factor = o[5];
  p.dilation_height_factor = o[6];
  p.input_offset = -d.input_zero_point;
  p.weights_offset = 0;
  p.output_offset = d.output_zero_point;
  p.quantized_activation_min = d.act_min;
  p.quantized_activation_max = d.act_max;
  const int32_t channels = n, filter_shape[4] = {n, kh, kw, in[3]};
  const int32_t out_shape[4] = {in[0], output->dims->data[1], output->dims->data[2], n};
  tflite::reference_integer_ops::ConvPerChannel(
      p, d.multiplier + first, d.shift + first, tflite::micro::GetTensorShape(input),
      tflite::micro::GetTensorData<int8_t>(input), tflite::RuntimeShape(4, filter_shape), weights,
      tflite::RuntimeShape(1, &channels), bias ? bias + first : nullptr,
      tflite::RuntimeShape(4, out_shape), out);
#endif
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const auto& d = *static_cast<const OpData*>(node->user_data);
  const TfLiteEvalTensor* input = tflite::micro::GetEvalInput(context, node, 0);
  const TfLiteEvalTensor* bias = tflite::micro::GetEvalInput(context, node, 2);
  TfLiteEvalTensor* output = tflite::micro::GetEvalOutput(context, node, 0);
  auto* weights = static_cast<int8_t*>(context->GetScratchBuffer(context, d.weights_idx));
  int8_t* out = tflite::micro::GetTensorData<int8_t>(output);
  int8_t* part = d.out_idx >= 0 ? static_cast<int8_t*>(context->GetScratchBuffer(context, d.out_idx))
                                : out;
  const int32_t* b = bias ? tflite::micro::GetTensorData<int32_t>(bias) : nullptr;
  const int pixels = output->dims->data[0] * output->dims->data[1] * output->dims->data[2];
  for (int first = 0; first < d.cout; first += d.group) {
    const int n = d.cout - first < d.group ? d.cout - first : d.group;
    DecodeChannels(d.indices, d.bits, d.tables, d.entries, d.per_channel, first, n, weights);
    ConvGroup(context, d, input, b, output, first, n, weights, part);
    if (part != out) {  // the group's channels to their place in each output pixel
      for (int p = 0; p < pixels; ++p) memcpy(out + p * d.cout + first, part + p * n, n);
    }
  }
  return kTfLiteOk;
}

}  // namespace

const TFLMRegistration* Register_LUT_CONV() {
  static TFLMRegistration registration = tflite::micro::RegisterOp(Init, Prepare, Eval);
  return &registration;
}

}  // namespace kdq
