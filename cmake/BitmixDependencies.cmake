# Every dependency comes from a Debian package (scripts/setup-debian.sh installs them);
# nothing is downloaded at configure time.

find_package(Eigen3 3.4 REQUIRED NO_MODULE)
find_package(Threads REQUIRED)

if(BITMIX_KERNELS_ONLY AND CMAKE_CROSSCOMPILING)
  # The AArch64 cross build has no target copy of libfmt; fmt's headers are architecture
  # independent, so use it header-only from a directory that holds nothing but fmt (adding
  # the host's /usr/include to a cross compiler would mix in x86-64 system headers).
  set(_fmt_dir "${CMAKE_BINARY_DIR}/cross-include")
  file(MAKE_DIRECTORY "${_fmt_dir}")
  if(NOT EXISTS "${_fmt_dir}/fmt")
    file(CREATE_LINK /usr/include/fmt "${_fmt_dir}/fmt" SYMBOLIC)
  endif()
  add_library(bitmix_fmt_header_only INTERFACE)
  target_include_directories(bitmix_fmt_header_only SYSTEM INTERFACE "${_fmt_dir}")
  target_compile_definitions(bitmix_fmt_header_only INTERFACE FMT_HEADER_ONLY=1)
  add_library(fmt::fmt ALIAS bitmix_fmt_header_only)
  # nlohmann's JSON is header-only too; core's tests (core/strict_json.hpp) need it.
  if(NOT EXISTS "${_fmt_dir}/nlohmann")
    file(CREATE_LINK /usr/include/nlohmann "${_fmt_dir}/nlohmann" SYMBOLIC)
  endif()
  add_library(bitmix_nlohmann_header_only INTERFACE)
  target_include_directories(bitmix_nlohmann_header_only SYSTEM INTERFACE "${_fmt_dir}")
  add_library(nlohmann_json::nlohmann_json ALIAS bitmix_nlohmann_header_only)
else()
  find_package(fmt 9 REQUIRED)
  find_package(ZLIB REQUIRED)
  find_package(nlohmann_json 3.10 REQUIRED)
endif()
