# cmake -P script: post-training allocation and quantization end to end on a few Fashion-MNIST
# images with a width-4 ResNet-20: every allocator stays inside its budgets (two at once), the
# CLADO cache resumes an interrupted measurement and gives identical bits, `bitmix quantize`
# writes a checkpoint that export, eval --compare and train --init accept, and bad input exits
# 2 (flags, budgets) or 1 (files) with nothing written.
file(REMOVE_RECURSE "${WORK_DIR}")
set(quiet --seed 1 --threads 1)
set(common ${quiet} --no-progress)
# Two weight options keep the CLADO measurement (1 + n + 4 per layer pair) and its solve small.
set(sets --wbits 2,8 --calib-images 32 --sens-images 32 --calib-batch 32)

function(run what)
  execute_process(COMMAND "${BITMIX}" ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "${what}: bitmix ${ARGN}\nexit ${result}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

# Runs bitmix expecting exit code `code` and a message matching `pattern`.
function(expect_failure what code pattern)
  execute_process(COMMAND "${BITMIX}" ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL ${code} OR NOT err MATCHES "${pattern}")
    message(FATAL_ERROR "${what}: bitmix ${ARGN}\nexit ${result}, expected ${code} and a message matching "
                        "'${pattern}':\n${out}\n${err}")
  endif()
endfunction()

function(json_get var file)
  file(READ "${file}" text)
  string(JSON value GET "${text}" ${ARGN})
  set(${var} "${value}" PARENT_SCOPE)
endfunction()

# Every budget of an allocation's summary.json is met.
function(check_budgets dir)
  file(READ "${dir}/summary.json" text)
  string(JSON n LENGTH "${text}" budgets)
  if(n LESS 1)
    message(FATAL_ERROR "${dir}/summary.json lists no budget")
  endif()
  math(EXPR last "${n} - 1")
  foreach(k RANGE ${last})
    string(JSON cap GET "${text}" budgets ${k} cap)
    string(JSON achieved GET "${text}" budgets ${k} achieved)
    string(JSON name GET "${text}" budgets ${k} name)
    # Costs are integers (bits, BitOPs) printed as JSON numbers: compare as floats via math().
    if(achieved GREATER cap)
      message(FATAL_ERROR "${dir}: budget ${name} exceeded: ${achieved} > ${cap}")
    endif()
  endforeach()
  foreach(f bits.json sensitivity.csv bits.svg)
    if(NOT EXISTS "${dir}/${f}")
      message(FATAL_ERROR "${dir}: no ${f}")
    endif()
  endforeach()
endfunction()

run("float training" train --data fashion-mnist ${common} --model resnet20 --width 4 --epochs 1 --batch 64
    --train-subset 256 --test-subset 128 --out "${WORK_DIR}/float")
set(float "${WORK_DIR}/float/model.ckpt")

# Uniform W8 gives the largest size; the size budget is half of it, the BitOPs budget uniform W4A4's.
run("uniform W8" allocate ${common} --init "${float}" --method uniform --budget-avg-bits 8 ${sets}
    --out "${WORK_DIR}/w8")
json_get(w8_kib "${WORK_DIR}/w8/summary.json" weight_kib)
string(REGEX REPLACE "^([0-9]+)\\..*" "\\1" w8_int "${w8_kib}")
math(EXPR half "${w8_int} / 2")
if(half LESS 1)
  message(FATAL_ERROR "uniform W8 weights ${w8_kib} KiB: too small for this test")
endif()
set(budgets --budget-size-kb ${half} --budget-avg-bits 6)
foreach(method uniform independent hawq clado)
  run("allocate ${method}" allocate ${common} --init "${float}" --method ${method} ${budgets} ${sets}
      --hawq-iterations 20 --cache "${WORK_DIR}/cache.txt" --out "${WORK_DIR}/${method}")
  check_budgets("${WORK_DIR}/${method}")
  json_get(method_seen "${WORK_DIR}/${method}/summary.json" method)
  if(NOT method_seen STREQUAL method)
    message(FATAL_ERROR "${method}: summary.json says method '${method_seen}'")
  endif()
endforeach()
json_get(status "${WORK_DIR}/clado/summary.json" solver status)
if(NOT status STREQUAL "optimal")
  message(FATAL_ERROR "clado: solver status '${status}', expected optimal")
endif()

# Resume: the same measurement from a cache cut short (header and the first half of its entries)
# gives identical bits; from the complete cache every evaluation is read back.
file(STRINGS "${WORK_DIR}/cache.txt" lines)
list(LENGTH lines count)
math(EXPR keep "${count} / 2")
list(SUBLIST lines 0 ${keep} partial)
list(JOIN partial "\n" partial_text)
file(WRITE "${WORK_DIR}/partial-cache.txt" "${partial_text}\n")
run("clado resumed" allocate ${common} --init "${float}" --method clado ${budgets} ${sets}
    --cache "${WORK_DIR}/partial-cache.txt" --out "${WORK_DIR}/clado-resumed")
run("clado cached" allocate ${common} --init "${float}" --method clado ${budgets} ${sets}
    --cache "${WORK_DIR}/cache.txt" --out "${WORK_DIR}/clado-cached")
foreach(again clado-resumed clado-cached)
  file(READ "${WORK_DIR}/clado/bits.json" a)
  file(READ "${WORK_DIR}/${again}/bits.json" b)
  if(NOT a STREQUAL b)
    message(FATAL_ERROR "${again}: bits.json differs from the first measurement's")
  endif()
endforeach()
json_get(evaluations "${WORK_DIR}/clado-cached/summary.json" measurement evaluations)
json_get(from_cache "${WORK_DIR}/clado-cached/summary.json" measurement from_cache)
if(NOT evaluations EQUAL from_cache)
  message(FATAL_ERROR "clado-cached: ${from_cache} of ${evaluations} evaluations from the cache")
endif()

# PTQ at the CLADO bits; the checkpoint exports, evaluates with parity, and fine-tunes.
run("quantize" quantize ${common} --init "${float}" --bits "${WORK_DIR}/clado/bits.json" --calib-images 32
    --bias-correction --test-subset 128 --out "${WORK_DIR}/ptq")
json_get(accuracy "${WORK_DIR}/ptq/summary.json" test_accuracy)
run("export" export --init "${WORK_DIR}/ptq/model.ckpt" --out "${WORK_DIR}/ptq/model.bmx")
run("eval" eval --model "${WORK_DIR}/ptq/model.bmx" --data fashion-mnist --test-subset 128 --threads 1 --no-progress
    --compare "${WORK_DIR}/ptq/model.ckpt")
run("fine-tune" train --data fashion-mnist ${common} --init "${WORK_DIR}/ptq/model.ckpt"
    --bits "${WORK_DIR}/ptq/bits.json" --epochs 1 --batch 64 --lr 0.01 --train-subset 256 --test-subset 128
    --out "${WORK_DIR}/finetuned")

# Bad input.
expect_failure("unordered --wbits" 2 "--wbits '3,2'" allocate ${common} --init "${float}" --wbits 3,2
               --budget-avg-bits 4 --out "${WORK_DIR}/bad1")
expect_failure("unknown method" 2 "--method 'greedy'" allocate ${common} --init "${float}" --method greedy
               --budget-avg-bits 4 --out "${WORK_DIR}/bad2")
expect_failure("no budget" 2 "a budget is required" allocate ${common} --init "${float}" --out "${WORK_DIR}/bad3")
expect_failure("infeasible budget" 2 "cannot be met: the smallest achievable is" allocate ${common} --init "${float}"
               --budget-size-kb 0.01 ${sets} --out "${WORK_DIR}/bad4")
expect_failure("missing checkpoint" 1 "no-such.ckpt" allocate ${common} --init "${WORK_DIR}/no-such.ckpt"
               --budget-avg-bits 4 --out "${WORK_DIR}/bad5")
expect_failure("quantized checkpoint" 1 "already quantized" allocate ${common} --init "${WORK_DIR}/ptq/model.ckpt"
               --budget-avg-bits 4 --out "${WORK_DIR}/bad6")
file(WRITE "${WORK_DIR}/broken.json" "{\"layers\": [")
expect_failure("malformed bits" 1 "broken.json" quantize ${common} --init "${float}" --bits "${WORK_DIR}/broken.json"
               --out "${WORK_DIR}/bad7")
expect_failure("too many images" 2 "--calib-images" quantize ${common} --init "${float}"
               --bits "${WORK_DIR}/clado/bits.json" --calib-images 10000000 --out "${WORK_DIR}/bad8")
foreach(k RANGE 1 8)
  if(EXISTS "${WORK_DIR}/bad${k}")
    message(FATAL_ERROR "a failed command left ${WORK_DIR}/bad${k} behind")
  endif()
endforeach()
message(STATUS "PTQ test accuracy at the CLADO bits: ${accuracy}")
file(REMOVE_RECURSE "${WORK_DIR}")
