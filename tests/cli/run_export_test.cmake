# cmake -P script: `bitmix export` on checkpoints written in the earlier metadata layout. A good
# one exports (exit 0); one without normalization and one with malformed metadata are refused
# with exit code 1, a message naming the file and what is wrong, and no .bmx file.
file(REMOVE_RECURSE "${WORK_DIR}")
execute_process(COMMAND "${FIXTURE}" "${WORK_DIR}" RESULT_VARIABLE result ERROR_VARIABLE err)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "fixture failed (${result}): ${err}")
endif()

execute_process(COMMAND "${BITMIX}" export --init "${WORK_DIR}/good.ckpt" --out "${WORK_DIR}/good.bmx"
                RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT result EQUAL 0 OR NOT EXISTS "${WORK_DIR}/good.bmx")
  message(FATAL_ERROR "export of a good earlier-layout checkpoint failed (${result}):\n${out}\n${err}")
endif()

function(expect_refused name pattern)
  execute_process(COMMAND "${BITMIX}" export --init "${WORK_DIR}/${name}.ckpt" --out "${WORK_DIR}/${name}.bmx"
                  RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL 1)
    message(FATAL_ERROR "export of ${name}.ckpt: exit code ${result}, expected 1:\n${out}\n${err}")
  endif()
  if(EXISTS "${WORK_DIR}/${name}.bmx")
    message(FATAL_ERROR "export of ${name}.ckpt failed but wrote ${name}.bmx")
  endif()
  if(NOT err MATCHES "${name}\\.ckpt" OR NOT err MATCHES "${pattern}")
    message(FATAL_ERROR "export of ${name}.ckpt: the message does not name the file and '${pattern}':\n${err}")
  endif()
  if(err MATCHES "has no \"model\" object")
    message(FATAL_ERROR "export of ${name}.ckpt: misleading message:\n${err}")
  endif()
  message(STATUS "${name}.ckpt refused: ${err}")
endfunction()

expect_refused(no_norm "metadata field 'normalization' is missing")
expect_refused(bad_json "not valid JSON")
file(REMOVE_RECURSE "${WORK_DIR}")
