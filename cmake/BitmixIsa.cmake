# Per-ISA compilation. bitmix never compiles the whole library for one instruction set:
# each ISA-specific translation unit gets its own flags through bitmix_set_isa_flags(), the
# rest is built for the baseline of the target, and the CPU is checked at run time before
# any ISA-specific function is called (the one mechanism for that: src/core/isa_dispatch.hpp).

if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  set(BITMIX_TARGET_X86 ON)
else()
  set(BITMIX_TARGET_X86 OFF)
endif()
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
  set(BITMIX_TARGET_AARCH64 ON)
else()
  set(BITMIX_TARGET_AARCH64 OFF)
endif()

option(BITMIX_ENABLE_AVX2 "Compile the AVX2 kernel paths (x86-64)" ${BITMIX_TARGET_X86})
option(BITMIX_ENABLE_AVX512 "Compile the AVX-512 (F/BW/VL/VPOPCNTDQ) kernel paths (x86-64)" ${BITMIX_TARGET_X86})
option(BITMIX_ENABLE_NEON "Compile the NEON kernel paths (AArch64)" ${BITMIX_TARGET_AARCH64})

if((BITMIX_ENABLE_AVX2 OR BITMIX_ENABLE_AVX512) AND NOT BITMIX_TARGET_X86)
  message(FATAL_ERROR "BITMIX_ENABLE_AVX2/BITMIX_ENABLE_AVX512 need an x86-64 target, "
                      "this build targets '${CMAKE_SYSTEM_PROCESSOR}'")
endif()
if(BITMIX_ENABLE_NEON AND NOT BITMIX_TARGET_AARCH64)
  message(FATAL_ERROR "BITMIX_ENABLE_NEON needs an AArch64 target, this build targets "
                      "'${CMAKE_SYSTEM_PROCESSOR}'")
endif()

# These flags and isa_level_features() in src/core/isa_dispatch.hpp (what the CPU must have to
# run the level's code) must name the same features.
set(BITMIX_AVX2_FLAGS -mavx2 -mfma -mbmi -mbmi2 -mpopcnt -mlzcnt -mf16c)
set(BITMIX_AVX512_FLAGS ${BITMIX_AVX2_FLAGS} -mavx512f -mavx512bw -mavx512vl -mavx512dq
    -mavx512vpopcntdq)
# AVX-512 plus the VNNI int8 dot product (VPDPBUSD); compiled whenever AVX-512 is.
set(BITMIX_AVX512VNNI_FLAGS ${BITMIX_AVX512_FLAGS} -mavx512vnni)
set(BITMIX_NEON_FLAGS "")   # Advanced SIMD is part of the AArch64 baseline

# bitmix_set_isa_flags(<avx2|avx512|avx512vnni|neon> <source>...)
function(bitmix_set_isa_flags isa)
  string(TOUPPER "${isa}" isa_upper)
  set(flags ${BITMIX_${isa_upper}_FLAGS})
  if(flags)
    set_source_files_properties(${ARGN} PROPERTIES COMPILE_OPTIONS "${flags}")
  endif()
endfunction()

# The compile definitions that tell dispatch code which paths exist in this build.
set(BITMIX_ISA_DEFINITIONS "")
if(BITMIX_ENABLE_AVX2)
  list(APPEND BITMIX_ISA_DEFINITIONS BITMIX_HAVE_AVX2=1)
endif()
if(BITMIX_ENABLE_AVX512)
  list(APPEND BITMIX_ISA_DEFINITIONS BITMIX_HAVE_AVX512=1 BITMIX_HAVE_AVX512VNNI=1)
endif()
if(BITMIX_ENABLE_NEON)
  list(APPEND BITMIX_ISA_DEFINITIONS BITMIX_HAVE_NEON=1)
endif()

# bitmix_isa_translation_units(<module> <source>...): declares the sources of bitmix_<module>
# that each hold one ISA's function table (the portable one included). They follow the rule for
# ISA translation units in src/core/isa_dispatch.hpp, which the isa_symbols test checks with nm
# (tests/isa/CMakeLists.txt) on their objects in the library and on a second copy compiled with
# -O0 (bitmix_<module>_isa_O0): an optimized build inlines most inline functions, an unoptimized
# one emits every one it uses, and the rule must hold for both. Call it after bitmix_add_module,
# in the module's directory (the ISA flags are properties of the sources there).
function(bitmix_isa_translation_units module)
  set(target bitmix_${module})
  foreach(source IN LISTS ARGN)
    set_property(GLOBAL APPEND PROPERTY BITMIX_ISA_TRANSLATION_UNITS "${module}|${source}")
  endforeach()
  if(BITMIX_BUILD_TESTS)
    set(copy ${target}_isa_O0)
    add_library(${copy} OBJECT ${ARGN})
    target_include_directories(${copy} PRIVATE $<TARGET_PROPERTY:${target},INCLUDE_DIRECTORIES>)
    target_compile_definitions(${copy} PRIVATE $<TARGET_PROPERTY:${target},COMPILE_DEFINITIONS>)
    target_compile_options(${copy} PRIVATE $<TARGET_PROPERTY:${target},COMPILE_OPTIONS> -O0)
    set_property(GLOBAL APPEND PROPERTY BITMIX_ISA_O0_TARGETS ${copy})
  endif()
endfunction()
