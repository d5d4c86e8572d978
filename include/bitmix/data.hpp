#pragma once
// bitmix::data: dataset readers (CIFAR-10 binary, IDX/gzip) and float batches with deterministic
// shuffling, augmentation and normalization; test-time augmentation views.
#include "bitmix/data/dataset.hpp"
#include "bitmix/data/loader.hpp"
#include "bitmix/data/test_time.hpp"
