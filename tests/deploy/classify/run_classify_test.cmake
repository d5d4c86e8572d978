# cmake -P script: install bitmix, build examples/classify against the installed package, write
# the fixture, classify it, and require 100% accuracy.
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
run_step("example configure" ${CMAKE_COMMAND} -S "${EXAMPLE_SOURCE_DIR}" -B "${WORK_DIR}/build"
         -G "${GENERATOR}" -DCMAKE_BUILD_TYPE=${BUILD_TYPE} "-DCMAKE_PREFIX_PATH=${prefix}")
run_step("example build" ${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run_step("fixture" "${FIXTURE}" "${WORK_DIR}/fixture")
run_step("classify" "${WORK_DIR}/build/bitmix_classify" "${WORK_DIR}/fixture/model.bmx"
         "${WORK_DIR}/fixture/images-idx3-ubyte" "${WORK_DIR}/fixture/labels-idx1-ubyte" --show 3 --batch 16)
message(STATUS "classify output:\n${step_output}")
if(NOT step_output MATCHES "accuracy 100.00% \\(40 of 40\\)")
  message(FATAL_ERROR "the installed example did not reproduce the runtime's predictions:\n${step_output}")
endif()
# A corrupt model is an error message, not a crash.
execute_process(COMMAND "${WORK_DIR}/build/bitmix_classify" "${WORK_DIR}/fixture/missing.bmx"
                        "${WORK_DIR}/fixture/images-idx3-ubyte" RESULT_VARIABLE result ERROR_VARIABLE err)
if(NOT result EQUAL 1 OR NOT err MATCHES "missing.bmx")
  message(FATAL_ERROR "a missing model should fail with exit code 1 and name the file (${result}):\n${err}")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
