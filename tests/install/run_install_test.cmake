# cmake -P script: install, configure a consumer against the install prefix, build, run.
#
# The consumer is configured with Eigen and nlohmann_json hidden (CMAKE_DISABLE_FIND_PACKAGE_*):
# the package must require only what its libraries link (Threads, fmt, zlib), so a consumer
# without those header-only libraries can use it. The installed headers are scanned as well:
# they may include only each other and standard headers, so that including bitmix/bitmix.hpp
# needs no third-party include path.
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")

function(run_step description)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "${description} failed (${result}):\n${out}\n${err}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

run_step("install" ${CMAKE_COMMAND} --install "${BITMIX_BUILD_DIR}" --prefix "${prefix}")

file(GLOB_RECURSE headers "${prefix}/include/bitmix/*")
if(NOT headers)
  message(FATAL_ERROR "no headers installed under ${prefix}/include/bitmix")
endif()
set(offending "")
foreach(header IN LISTS headers)
  file(STRINGS "${header}" includes REGEX "^[ \t]*#[ \t]*include")
  foreach(line IN LISTS includes)
    # Allowed: "bitmix/..." and <name> without a directory or extension (the C++ library).
    if(line MATCHES "#[ \t]*include[ \t]*\"bitmix/[^\"]+\"" OR line MATCHES "#[ \t]*include[ \t]*<[a-z_0-9]+>")
      continue()
    endif()
    file(RELATIVE_PATH rel "${prefix}/include" "${header}")
    string(APPEND offending "  ${rel}: ${line}\n")
  endforeach()
endforeach()
if(offending)
  message(FATAL_ERROR "installed public headers include something other than bitmix and standard headers:\n"
                      "${offending}")
endif()

run_step("consumer configure" ${CMAKE_COMMAND} -S "${CONSUMER_SOURCE_DIR}" -B "${WORK_DIR}/build"
         -G "${GENERATOR}" -DCMAKE_BUILD_TYPE=${BUILD_TYPE} "-DCMAKE_PREFIX_PATH=${prefix}"
         -DCMAKE_DISABLE_FIND_PACKAGE_Eigen3=TRUE -DCMAKE_DISABLE_FIND_PACKAGE_nlohmann_json=TRUE
         "-DEigen3_DIR=${WORK_DIR}/no-eigen" "-Dnlohmann_json_DIR=${WORK_DIR}/no-nlohmann_json")
run_step("consumer build" ${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run_step("consumer run" "${WORK_DIR}/build/bitmix_consumer")
message(STATUS "consumer output:\n${step_output}")
if(NOT step_output MATCHES "consumer ok")
  message(FATAL_ERROR "consumer did not report success:\n${step_output}")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
