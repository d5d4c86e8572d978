#pragma once
// bitmix::nn: layers with explicit backward passes, the model zoo, optimizers, checkpoints and
// their run metadata, the Trainer, and quantization-aware training (docs/training.md, docs/quantization.md).
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/functional.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/module.hpp"
#include "bitmix/nn/optimizer.hpp"
#include "bitmix/nn/ptq.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/nn/run_metadata.hpp"
#include "bitmix/nn/trainer.hpp"
#include "bitmix/nn/training_options.hpp"
