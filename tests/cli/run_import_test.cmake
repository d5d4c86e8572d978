# cmake -P script: bitmix import of PyTorch-exported CNNs (tests/onnx/make_torch_models.py), then
# the imported checkpoints through QAT (train --init --quant) and an EBS search (search --init) on
# a few Fashion-MNIST images; the imported ResNet is exported and evaluated on the integer runtime
# with parity to its fake-quant model, the MobileNet-style one (ReLU6) is refused naming the node. Bad
# files exit 1 without writing the output directory; a missing argument exits 2.
# Skipped (the test's SKIP_REGULAR_EXPRESSION) when PyTorch is not installed.
file(REMOVE_RECURSE "${WORK_DIR}")
set(common --data fashion-mnist --seed 1 --no-progress --threads 1 --train-subset 256 --test-subset 128)

function(run what)
  execute_process(COMMAND "${BITMIX}" ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "${what}: bitmix ${ARGN}\nexit ${result}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

function(expect_exit code fragment what)
  execute_process(COMMAND "${BITMIX}" ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(FIND "${err}" "${fragment}" at)
  if(NOT result EQUAL ${code} OR at EQUAL -1)
    message(FATAL_ERROR "${what}: bitmix ${ARGN}\nexit ${result}, expected ${code} with '${fragment}'\n${out}\n${err}")
  endif()
endfunction()

# Refusals need no PyTorch.
file(MAKE_DIRECTORY "${WORK_DIR}")
file(WRITE "${WORK_DIR}/garbage.onnx" "this is not an ONNX model")
expect_exit(1 "not a valid ONNX protobuf" "garbage file" import "${WORK_DIR}/garbage.onnx" --out "${WORK_DIR}/bad")
expect_exit(1 "missing.onnx" "missing file" import "${WORK_DIR}/missing.onnx" --out "${WORK_DIR}/bad")
expect_exit(2 "no ONNX file" "no file" import --out "${WORK_DIR}/bad")
if(EXISTS "${WORK_DIR}/bad")
  message(FATAL_ERROR "a refused import created its output directory ${WORK_DIR}/bad")
endif()

execute_process(COMMAND "${PYTHON}" "${MAKE_MODELS}" "${WORK_DIR}/models" RESULT_VARIABLE result OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
if(result EQUAL 77)
  message(STATUS "ONNX CLI test skipped: ${out}")
  return()
elseif(NOT result EQUAL 0)
  message(FATAL_ERROR "make_torch_models.py: exit ${result}\n${out}\n${err}")
endif()

foreach(m resnet mobilenet)
  run("import ${m}" import "${WORK_DIR}/models/${m}.onnx" --out "${WORK_DIR}/${m}" --mean 0.286 --std 0.353
      --data-name fashion-mnist)
  # Float fine-tuning and QAT take the graph from the checkpoint (no --model).
  run("float ${m}" train ${common} --init "${WORK_DIR}/${m}/model.ckpt" --epochs 1 --batch 64 --lr 0.01
      --out "${WORK_DIR}/${m}-float")
  run("QAT ${m}" train ${common} --quant lsq --wbits 4 --abits 4 --init "${WORK_DIR}/${m}/model.ckpt" --epochs 1
      --batch 64 --lr 0.01 --out "${WORK_DIR}/${m}-qat")
  run("EBS ${m}" search ${common} --init "${WORK_DIR}/${m}/model.ckpt" --budget-avg-bits 3 --wbits 2,3,4
      --abits 2,3,4 --epochs 1 --batch 64 --lr 0.01 --out "${WORK_DIR}/${m}-search")
  if(NOT EXISTS "${WORK_DIR}/${m}-search/bits.json")
    message(FATAL_ERROR "search of the imported ${m} wrote no bits.json")
  endif()
endforeach()
file(READ "${WORK_DIR}/resnet-search/bits.json" bits)
string(FIND "${bits}" "layer2_0_shortcut_0" at)
if(at EQUAL -1)
  message(FATAL_ERROR "the searched BitConfig does not name the imported layers:\n${bits}")
endif()
# The imported ResNet deploys: export, then integer evaluation against its fake-quant model.
run("export resnet" export --init "${WORK_DIR}/resnet-qat/model.ckpt" --out "${WORK_DIR}/resnet.bmx")
run("eval resnet" eval --model "${WORK_DIR}/resnet.bmx" --data fashion-mnist --test-subset 128 --threads 1
    --no-progress --compare "${WORK_DIR}/resnet-qat/model.ckpt" --json "${WORK_DIR}/resnet-eval.json")
file(READ "${WORK_DIR}/resnet-eval.json" eval_json)
string(JSON agreement GET "${eval_json}" compare top1_agreement)
if(agreement LESS 0.995)
  message(FATAL_ERROR "integer runtime vs fake-quant model of the imported ResNet: top-1 agreement ${agreement}")
endif()
# ReLU6 has no runtime op yet: the export names the node.
expect_exit(2 "(relu6): the integer runtime has no op for it" "export of the MobileNet-style model" export
            --init "${WORK_DIR}/mobilenet-qat/model.ckpt" --out "${WORK_DIR}/mobilenet.bmx")
if(EXISTS "${WORK_DIR}/mobilenet.bmx")
  message(FATAL_ERROR "a refused export wrote ${WORK_DIR}/mobilenet.bmx")
endif()
