#pragma once
// bitmix::support: what long runs and the command-line tool show and record besides their
// results: progress display, SVG charts, peak memory. Above core, below nn, search and the CLI;
// kernels, runtime and an inference-only program never need it. Its names live in namespace
// bitmix (not bitmix::support), like core's, so code moving between the two need not change.
#include "bitmix/support/plot.hpp"
#include "bitmix/support/progress.hpp"
#include "bitmix/support/resources.hpp"
