# Cross build for AArch64 Linux with Debian's g++-aarch64-linux-gnu; executables (the kernel
# tests) run under qemu-user with the cross sysroot:
#   cmake -S . -B build-aarch64 -G Ninja -DBITMIX_KERNELS_ONLY=ON \
#         -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

set(BITMIX_AARCH64_SYSROOT /usr/aarch64-linux-gnu CACHE PATH "AArch64 target libraries (Debian's cross packages)")
set(CMAKE_FIND_ROOT_PATH ${BITMIX_AARCH64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
# Packages: the sysroot first, then the host, for architecture-independent header-only ones
# (Eigen's config is found on the host; no AArch64 target links it in the kernels-only build).
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# CTest and gtest_discover_tests prepend this to every test command.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L ${BITMIX_AARCH64_SYSROOT})
