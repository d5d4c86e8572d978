#pragma once
// Inner loops of the candidate W2A2 kernel families, written as the kernel's register-blocked
// inner step and nothing else (no packing, no epilogue): the sustained rate a kernel built on
// each could approach. Each TU is compiled with its ISA's flags; bench_lut.cpp checks the CPU
// before calling. All loops return a checksum so nothing is optimized away.
//
// Sizes: `groups` reduction steps (one table group of g taps, or one 4-byte / 32-bit word),
// `channels` output channels, `blocks` pixel blocks (the loop's pixel count per block is
// kPixels* below). Tables / weights for every channel are read from `table`, so their footprint
// is the layer's (L1 or L2 like the real kernel's); the activation side is one block's worth,
// reused for every block (it is in L1 in a real tile too).
#include <cstdint>

namespace bitmix::bench {

// AVX2 VPSHUFB g = 4: tables [channels][groups][16] u8, indices [groups][2][32] (16 pixels x
// 2 planes per ymm, 2 ymm = 32 pixels per block); 4 channels x 2 ymm per step, u8 sums widened
// by VPMADDUBSW [1, 2] every 21 steps.
inline constexpr int kPixelsVpshufbYmm = 32;
uint64_t loop_vpshufb_ymm(const uint8_t* table, const uint8_t* index, int groups, int channels, int blocks);
// The same with zmm VPSHUFB (AVX-512 BW): indices [groups][2][64] (32 pixels x 2 planes per zmm).
inline constexpr int kPixelsVpshufbZmm = 64;
uint64_t loop_vpshufb_zmm(const uint8_t* table, const uint8_t* index, int groups, int channels, int blocks);
// AVX-512 VBMI VPERMB g = 6: tables [channels][groups][64], indices [groups][2][64]; widened every 14.
inline constexpr int kPixelsVpermb = 64;
uint64_t loop_vpermb_zmm(const uint8_t* table, const uint8_t* index, int groups, int channels, int blocks);
// AVX-512 VNNI VPDPBUSD (int8): weights [groups][channels][4] s8 (16 channels per zmm),
// activations [pixels][groups][4] u8 broadcast; blocks of 8 pixels.
inline constexpr int kPixelsVpdpbusd = 8;
uint64_t loop_vpdpbusd_zmm(const uint8_t* weights, const uint8_t* act, int groups, int channels, int blocks);
// AVX2 VPMADDUBSW + VPMADDWD + VPADDD (int8, the oneDNN AVX2 u8s8 inner step): weights
// [groups][channels][4] (8 channels per ymm), blocks of 5 pixels.
inline constexpr int kPixelsVpmaddubsw = 5;
uint64_t loop_vpmaddubsw_ymm(const uint8_t* weights, const uint8_t* act, int groups, int channels, int blocks);
// AVX-512 VPANDD + VPOPCNTD + VPADDD (bitmix's AVX-512 step), W2A2: weight words
// [groups][2 planes][channels] u32, activation words [pixels][groups][2]; blocks of 6 pixels,
// one accumulator per plane diagonal.
inline constexpr int kPixelsPopcntZmm = 6;
uint64_t loop_popcnt_zmm(const uint32_t* weights, const uint32_t* act, int groups, int channels, int blocks);
// AVX2 nibble-LUT popcount (bitmix's AVX2 step), W2A2: same data; 16 channels as two ymm halves,
// blocks of 2 pixels, byte sums widened every 31 words.
inline constexpr int kPixelsPopcntYmm = 2;
uint64_t loop_popcnt_ymm(const uint32_t* weights, const uint32_t* act, int groups, int channels, int blocks);

}  // namespace bitmix::bench

namespace bitmix::bench {
// Registers lut_loop/<loop>/<shape>/b<batch> for ResNet-20's stride-1 3x3 layer shapes (bench_lut.cpp).
void register_lut_loop_benchmarks();
}  // namespace bitmix::bench
