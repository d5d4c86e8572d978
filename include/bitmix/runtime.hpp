#pragma once
// bitmix::runtime: the .bmx model file, the integer model and the inference session
// (docs/runtime.md), and the timing of one layer for latency tables. Links only bitmix::kernels
// and bitmix::core.
#include "bitmix/runtime/bmx_file.hpp"
#include "bitmix/runtime/layer_timing.hpp"
#include "bitmix/runtime/model.hpp"
#include "bitmix/runtime/session.hpp"
