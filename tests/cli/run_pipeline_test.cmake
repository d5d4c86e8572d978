# cmake -P script: the quick start's pipeline end to end on a few Fashion-MNIST images with a
# narrow ResNet-20 (seconds, not minutes): float training, uniform QAT, EBS search, fine-tuning
# at the searched bits, export of both quantized runs, integer evaluation with fake-quant parity,
# benchmark, and the report that reads every stage's JSON. It proves the stages still read what
# the previous ones write; accuracy is not the point at this size.
file(REMOVE_RECURSE "${WORK_DIR}")
set(common --data fashion-mnist --seed 1 --no-progress --threads 1 --train-subset 256 --test-subset 128)

function(run what)
  execute_process(COMMAND "${BITMIX}" ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "${what}: bitmix ${ARGN}\nexit ${result}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

run("float training" train ${common} --model resnet20 --width 4 --epochs 1 --batch 64 --out "${WORK_DIR}/float")
# Later stages take the architecture (width 4) from the checkpoint; a flag that contradicts it is
# a usage error.
execute_process(COMMAND "${BITMIX}" train ${common} --init "${WORK_DIR}/float/model.ckpt" --width 8 --epochs 1
                        --out "${WORK_DIR}/contradiction" RESULT_VARIABLE result ERROR_VARIABLE err)
if(NOT result EQUAL 2 OR NOT err MATCHES "--width 8 contradicts")
  message(FATAL_ERROR "train --init with a contradicting --width: exit ${result}, expected 2:\n${err}")
endif()
run("uniform W3A3" train ${common} --quant lsq --wbits 3 --abits 3 --init "${WORK_DIR}/float/model.ckpt"
    --epochs 1 --batch 64 --lr 0.01 --out "${WORK_DIR}/uniform")
run("EBS search" search ${common} --init "${WORK_DIR}/float/model.ckpt" --budget-avg-bits 3 --wbits 2,3,4
    --abits 2,3,4 --epochs 1 --batch 64 --lr 0.01 --out "${WORK_DIR}/search")
run("fine-tuning" train ${common} --bits "${WORK_DIR}/search/bits.json" --init "${WORK_DIR}/search/model.ckpt"
    --epochs 1 --batch 64 --lr 0.01 --out "${WORK_DIR}/searched")
foreach(r uniform searched)
  run("export ${r}" export --init "${WORK_DIR}/${r}/model.ckpt" --out "${WORK_DIR}/${r}/model.bmx")
  run("eval ${r}" eval --model "${WORK_DIR}/${r}/model.bmx" --data fashion-mnist --test-subset 128 --threads 1
      --no-progress --compare "${WORK_DIR}/${r}/model.ckpt" --json "${WORK_DIR}/${r}/eval.json")
  run("bench ${r}" bench --model "${WORK_DIR}/${r}/model.bmx" --batch 1 --threads 1 --seconds 0.05 --min-runs 3
      --json "${WORK_DIR}/${r}/bench.json")
endforeach()
# The kernel family of every convolution shows in bench's per-op table, forced by the flag or the
# environment; an unknown family name is refused naming the variable.
foreach(family popcount int8 lut)
  run("bench --kernel-family ${family}" bench --model "${WORK_DIR}/uniform/model.bmx" --batch 1 --threads 1
      --seconds 0.01 --min-runs 1 --warmup 0 --kernel-family ${family})
  string(FIND "${last_output}" "[${family}]" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "bench --kernel-family ${family} shows no [${family}] op:\n${last_output}")
  endif()
endforeach()
execute_process(COMMAND ${CMAKE_COMMAND} -E env BITMIX_KERNEL_FAMILY=fastest "${BITMIX}" bench
                        --model "${WORK_DIR}/uniform/model.bmx" --seconds 0.01 --min-runs 1
                RESULT_VARIABLE result ERROR_VARIABLE err)
if(result EQUAL 0 OR NOT err MATCHES "BITMIX_KERNEL_FAMILY='fastest'")
  message(FATAL_ERROR "BITMIX_KERNEL_FAMILY=fastest: exit ${result}, expected an error naming it:\n${err}")
endif()
run("report" report --float "${WORK_DIR}/float" --run "uniform W3A3=${WORK_DIR}/uniform"
    --run "EBS=${WORK_DIR}/searched")
foreach(row "| fp32 |" "| uniform W3A3 |" "| EBS |")
  string(FIND "${last_output}" "${row}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "bitmix report printed no row '${row}':\n${last_output}")
  endif()
endforeach()
message(STATUS "${last_output}")
file(REMOVE_RECURSE "${WORK_DIR}")
