# cmake -P script: the quantizers from the literature through the CLI on a few Fashion-MNIST
# images with a narrow ResNet-20: SYQ (binary and ternary), DSConv and INQ train, export to a .bmx
# and evaluate with fake-quant parity; the flags each of them takes are checked (usage errors
# exit 2, and so does export of a DSConv layer with several blocks per output channel).
file(REMOVE_RECURSE "${WORK_DIR}")
set(common --data fashion-mnist --seed 1 --no-progress --threads 1 --train-subset 256 --test-subset 128)

function(run what)
  execute_process(COMMAND "${BITMIX}" ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "${what}: bitmix ${ARGN}\nexit ${result}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
  set(last_error "${err}" PARENT_SCOPE)
endfunction()

function(expect_failure what code pattern)
  execute_process(COMMAND "${BITMIX}" ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL ${code} OR NOT err MATCHES "${pattern}")
    message(FATAL_ERROR "${what}: bitmix ${ARGN}\nexit ${result}, expected ${code} and a message matching "
                        "'${pattern}':\n${out}\n${err}")
  endif()
endfunction()

run("float training" train ${common} --model resnet20 --width 4 --epochs 1 --batch 64 --out "${WORK_DIR}/float")
set(init --init "${WORK_DIR}/float/model.ckpt")

# Each scheme: train, export, integer evaluation against the fake-quant checkpoint.
function(train_export_eval name)
  run("train ${name}" train ${common} ${init} --epochs 4 --batch 64 --lr 0.01 ${ARGN} --out "${WORK_DIR}/${name}")
  set(last_error "${last_error}" PARENT_SCOPE)
  run("export ${name}" export --init "${WORK_DIR}/${name}/model.ckpt" --out "${WORK_DIR}/${name}/model.bmx")
  run("eval ${name}" eval --model "${WORK_DIR}/${name}/model.bmx" --data fashion-mnist --test-subset 128 --threads 1
      --no-progress --compare "${WORK_DIR}/${name}/model.ckpt" --json "${WORK_DIR}/${name}/eval.json")
  file(READ "${WORK_DIR}/${name}/eval.json" json)
  string(JSON agreement GET "${json}" compare top1_agreement)
  string(JSON kib GET "${json}" parameter_kib)
  if(agreement LESS 0.95)
    message(FATAL_ERROR "${name}: the integer model agrees with its fake-quant model on ${agreement} of the images")
  endif()
  message(STATUS "${name}: top-1 agreement ${agreement}, packed parameters ${kib} KiB")
endfunction()

train_export_eval(syq1 --quant syq --wbits 1 --abits 4)
train_export_eval(syq2 --quant syq --wbits 2 --abits 4)
train_export_eval(dsconv --quant dsconv --wbits 4 --abits 4)
train_export_eval(inq --quant inq --wbits 3 --abits 4 --inq-steps 0.5,0.75,0.875,1)
foreach(step "INQ step 1/4: 50 %" "INQ step 4/4: 100 %")
  string(FIND "${last_error}" "${step}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "train inq did not report '${step}':\n${last_error}")
  endif()
endforeach()

# DSConv with two blocks per output channel on the 8- and 16-channel layers: trains, but the
# integer kernels have one scale per output channel, so export refuses it by name.
run("train dsconv block 4" train ${common} ${init} --epochs 1 --batch 64 --lr 0.01 --quant dsconv --wbits 4 --abits 4
    --dsconv-block 4 --out "${WORK_DIR}/dsconv4")
expect_failure("export dsconv block 4" 2 "blocks per output channel" export --init "${WORK_DIR}/dsconv4/model.ckpt"
               --out "${WORK_DIR}/dsconv4/model.bmx")
if(EXISTS "${WORK_DIR}/dsconv4/model.bmx")
  message(FATAL_ERROR "a refused export left ${WORK_DIR}/dsconv4/model.bmx")
endif()

# INQ ending below 1 keeps float weights: export refuses.
run("train inq partial" train ${common} ${init} --epochs 2 --batch 64 --lr 0.01 --quant inq --wbits 3 --abits 4
    --inq-steps 0.5,0.75 --out "${WORK_DIR}/inq-partial")
expect_failure("export inq partial" 2 "frozen" export --init "${WORK_DIR}/inq-partial/model.ckpt"
               --out "${WORK_DIR}/inq-partial/model.bmx")

# Bad flags: usage errors naming the flag.
set(qat train ${common} ${init} --epochs 1 --out "${WORK_DIR}/bad")
expect_failure("syq 3 bits" 2 "bits = 3" ${qat} --quant syq --wbits 3 --abits 4)
expect_failure("dsconv-block without dsconv" 2 "--dsconv-block" ${qat} --quant lsq --wbits 4 --abits 4 --dsconv-block 8)
expect_failure("dsconv block not dividing" 2 "w_block = 3" ${qat} --quant dsconv --wbits 4 --abits 4 --dsconv-block 3)
expect_failure("inq-steps without inq" 2 "--inq-steps" ${qat} --quant lsq --wbits 4 --abits 4 --inq-steps 0.5,1)
expect_failure("inq-steps decreasing" 2 "must increase" ${qat} --quant inq --wbits 3 --abits 4 --inq-steps 0.75,0.5)
expect_failure("inq-steps out of range" 2 "not a fraction" ${qat} --quant inq --wbits 3 --abits 4 --inq-steps 0.5,1.5)
expect_failure("inq more steps than epochs" 2 "at least one epoch" ${qat} --quant inq --wbits 3 --abits 4
               --inq-steps 0.5,1)
expect_failure("inq 7 bits" 2 "bits = 7" ${qat} --quant inq --wbits 7 --abits 4)
file(REMOVE_RECURSE "${WORK_DIR}")
