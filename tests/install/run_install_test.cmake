# cmake -P script: install, configure a consumer against the install prefix, build, run.
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
run_step("consumer configure" ${CMAKE_COMMAND} -S "${CONSUMER_SOURCE_DIR}" -B "${WORK_DIR}/build"
         -G "${GENERATOR}" -DCMAKE_BUILD_TYPE=${BUILD_TYPE} "-DCMAKE_PREFIX_PATH=${prefix}")
run_step("consumer build" ${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run_step("consumer run" "${WORK_DIR}/build/bitmix_consumer")
message(STATUS "consumer output:\n${step_output}")
if(NOT step_output MATCHES "consumer ok")
  message(FATAL_ERROR "consumer did not report success:\n${step_output}")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
