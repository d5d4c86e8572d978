# bitmix_add_module(<name> SOURCES <src>... [PUBLIC_DEPS <target>...] [PRIVATE_DEPS <target>...])
#
# Each module of the house plan (core, support, data, quant, nn, search, kernels, runtime,
# deploy) is a static library bitmix_<name> (alias bitmix::<name>), so the layering in DESIGN.md
# is enforced by the linker (and the includes by tests/layering): an inference-only program links bitmix::runtime and gets nothing of training.
set(BITMIX_MODULE_TARGETS "" CACHE INTERNAL "")

set(BITMIX_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
    -Wunused -Woverloaded-virtual -Wnull-dereference -Wdouble-promotion -Wformat=2
    -Wimplicit-fallthrough)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  # GCC 12 reports -Wrestrict false positives inside libstdc++'s string concatenation at -O3
  # (GCC bug 105329); the warning is useless there and would break -Werror builds.
  list(APPEND BITMIX_WARNINGS -Wno-restrict)
endif()
if(BITMIX_WERROR)
  list(APPEND BITMIX_WARNINGS -Werror)
endif()

# Header-only libraries the modules use internally. Given as PRIVATE_DEPS they are wrapped in
# $<BUILD_INTERFACE:...>: a static library's private dependencies are otherwise exported into its
# link interface, and every consumer of the installed package would have to find them, although
# no installed header includes them and nothing of them is linked.
set(BITMIX_HEADER_ONLY_DEPS nlohmann_json::nlohmann_json Eigen3::Eigen)

function(bitmix_add_module name)
  cmake_parse_arguments(ARG "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  set(private_deps "")
  foreach(dep IN LISTS ARG_PRIVATE_DEPS)
    if(dep IN_LIST BITMIX_HEADER_ONLY_DEPS)
      list(APPEND private_deps "$<BUILD_INTERFACE:${dep}>")
    else()
      list(APPEND private_deps ${dep})
    endif()
  endforeach()
  set(target bitmix_${name})
  add_library(${target} STATIC ${ARG_SOURCES})
  add_library(bitmix::${name} ALIAS ${target})
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${name} OUTPUT_NAME bitmix_${name})
  target_compile_features(${target} PUBLIC cxx_std_20)
  target_include_directories(${target}
    PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
           $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
    PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_compile_options(${target} PRIVATE ${BITMIX_WARNINGS})
  target_compile_definitions(${target} PRIVATE ${BITMIX_ISA_DEFINITIONS})
  target_link_libraries(${target} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${private_deps})
  set(BITMIX_MODULE_TARGETS ${BITMIX_MODULE_TARGETS} ${target} CACHE INTERNAL "")
endfunction()

# bitmix_add_test_suite(<module> LIBS <target>...) builds tests/<module>/*.cpp into one
# GoogleTest program bitmix_<module>_tests and registers it with CTest.
function(bitmix_add_test_suite module)
  cmake_parse_arguments(ARG "" "TIMEOUT" "LIBS;EXTRA_SOURCES" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/${module}/*.cpp)
  if(NOT sources OR NOT TARGET bitmix_${module})
    return()
  endif()
  set(target bitmix_${module}_tests)
  add_executable(${target} ${sources} ${ARG_EXTRA_SOURCES})
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests)
  target_compile_options(${target} PRIVATE ${BITMIX_WARNINGS})
  target_compile_definitions(${target} PRIVATE ${BITMIX_ISA_DEFINITIONS}
    BITMIX_TEST_DATA_DIR="${PROJECT_SOURCE_DIR}/tests/data")
  target_link_libraries(${target} PRIVATE ${ARG_LIBS} bitmix_test_main)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 600)
  endif()
  # Naming the target (not its file) makes CTest prepend CMAKE_CROSSCOMPILING_EMULATOR
  # (qemu-aarch64 in the AArch64 cross build).
  add_test(NAME ${module} COMMAND ${target} --gtest_brief=1)
  set_tests_properties(${module} PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "unit;${module}")
endfunction()
