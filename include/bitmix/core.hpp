#pragma once
// bitmix::core: Tensor, parameters, errors, the thread pool, CPU detection, random numbers, timers
// and file helpers. Plotting, progress display and resource measurement are in
// bitmix/support.hpp.
#include "bitmix/core/aligned.hpp"
#include "bitmix/core/cpu.hpp"
#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/core/interrupt.hpp"
#include "bitmix/core/parameter.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/tensor.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/core/timer.hpp"
#include "bitmix/core/version.hpp"
