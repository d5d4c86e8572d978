# Installs headers, the module libraries and a CMake package, so that a consumer can write
#   find_package(bitmix CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE bitmix::bitmix)     # or bitmix::runtime for inference only
include(CMakePackageConfigHelpers)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/bitmix DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS bitmix ${BITMIX_MODULE_TARGETS}
        EXPORT bitmixTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(BITMIX_CMAKE_INSTALL_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/bitmix)
install(EXPORT bitmixTargets NAMESPACE bitmix:: DESTINATION ${BITMIX_CMAKE_INSTALL_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/bitmixConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/bitmixConfig.cmake
                              INSTALL_DESTINATION ${BITMIX_CMAKE_INSTALL_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/bitmixConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/bitmixConfig.cmake ${PROJECT_BINARY_DIR}/bitmixConfigVersion.cmake
        DESTINATION ${BITMIX_CMAKE_INSTALL_DIR})
