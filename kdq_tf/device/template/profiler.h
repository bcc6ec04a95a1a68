// Per-operator timing for `kdq_tf firmware profile` (built with PROFILE=1, which defines
// KDQ_PROFILE for main.cc only: the TFLM objects are the same as in the plain build).
//
// TFLM's interpreter wraps every operator's Invoke in BeginEvent/EndEvent of the
// MicroProfilerInterface it was given. This implementation sums the ticks of timer.h per
// operator position over every inference, and prints one line per operator:
//   kdq: op <index> <tag> <ticks over all inferences>
// TFLM's own MicroProfiler keeps 4,096 events and a table per tag (about 80 KB of RAM, more than
// many parts have for the whole model) and logs through DebugLog in a format that changes between
// TFLM versions; this one takes a few KB and prints in the firmware's own `kdq:` format.
#ifndef KDQ_PROFILER_H_
#define KDQ_PROFILER_H_

#include <cstdint>
#include <cstdio>

#include "tensorflow/lite/micro/micro_profiler_interface.h"
#include "timer.h"

class KdqProfiler : public tflite::MicroProfilerInterface {
 public:
  static constexpr uint32_t kMaxOps = 256;

  // Events outside StartInvoke/StopInvoke (none in today's TFLM) are not counted, so operator i
  // of every inference lands in slot i.
  void StartInvoke() {
    next_ = 0;
    armed_ = true;
  }
  void StopInvoke() {
    armed_ = false;
    if (next_ > ops_) ops_ = next_;
  }

  uint32_t BeginEvent(const char* tag) override {
    if (!armed_) return kNone;
    if (next_ >= kMaxOps) {
      overflow_ = true;
      return kNone;
    }
    tags_[next_] = tag;
    start_[next_] = kdq_timer_ticks();
    return next_++;
  }

  void EndEvent(uint32_t handle) override {
    if (handle < kMaxOps) ticks_[handle] += kdq_timer_ticks() - start_[handle];
  }

  void Print() const {
    if (overflow_) {
      printf("kdq: error the model has more than %u operators to profile\n",
             static_cast<unsigned>(kMaxOps));
    }
    for (uint32_t i = 0; i < ops_; ++i) {
      printf("kdq: op %u %s %llu\n", static_cast<unsigned>(i), tags_[i],
             static_cast<unsigned long long>(ticks_[i]));
    }
  }

 private:
  static constexpr uint32_t kNone = 0xFFFFFFFF;
  const char* tags_[kMaxOps] = {};
  uint64_t start_[kMaxOps] = {};
  uint64_t ticks_[kMaxOps] = {};
  uint32_t next_ = 0;
  uint32_t ops_ = 0;
  bool armed_ = false;
  bool overflow_ = false;
};

#endif  // KDQ_PROFILER_H_
