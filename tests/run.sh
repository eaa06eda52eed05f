#!/usr/bin/env bash
# The project's one test command (README "Set-up", and .ci/run calls exactly this).
# 1. a venv in .venv with everything (torch==2.13.0 CPU pinned; never torchvision), the full pytest suite;
# 2. vermin: the torch-free runtime and the shared numpy-side modules run on Python 3.8;
# 3. a second venv .venv-np1 with numpy 1.26: the runtime-facing tests once more under numpy 1.x, and the
#    Triton tests against the real tritonserver of nvidia-pytriton 0.7.0 (which pins numpy<2, so it lives here);
#    there its cv2 stands in for JetPack's (no pip metadata) and `pip install ".[jetson]"` must resolve nothing
#    JetPack provides.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/rmpsam-edge ] || [ pyproject.toml -nt .venv/.installed ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q -U pip
  .venv/bin/pip install -q -e ".[all]" torch==2.13.0
  touch .venv/.installed
fi

echo "== pytest (full suite)"
.venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"

echo "== vermin: runtime + shared numpy modules need at most Python 3.8"
RUNTIME_FILES=$(ls runtime/*.py runtime/*/*.py rmpsam_edge/spec.py rmpsam_edge/errors.py rmpsam_edge/atomic.py rmpsam_edge/signals.py rmpsam_edge/image_header.py rmpsam_edge/media.py rmpsam_edge/automatic.py rmpsam_edge/preprocess.py \
  rmpsam_edge/demo/*.py rmpsam_edge/timing.py rmpsam_edge/weights.py rmpsam_edge/commands/demo.py rmpsam_edge/commands/build_engine.py rmpsam_edge/commands/common_args.py \
  rmpsam_edge/postprocess.py rmpsam_edge/predictor.py rmpsam_edge/tracking.py rmpsam_edge/visualize.py 2>/dev/null)
.venv/bin/vermin -t=3.8- --no-tips --violations --eval-annotations $RUNTIME_FILES
echo "vermin: ok"

echo "== runtime tests under numpy 1.x"
if [ ! -x .venv-np1/bin/python ] || [ pyproject.toml -nt .venv-np1/.installed ]; then
  "$PY" -m venv .venv-np1
  .venv-np1/bin/pip install -q -U pip
  .venv-np1/bin/pip install -q "numpy==1.26.4" "opencv-python-headless<4.13" onnxruntime openvino onnx onnxslim \
    scipy pytest torch==2.13.0 nvidia-pytriton==0.7.0 "tritonclient[http,grpc]"   # Triton: pins numpy<2
  .venv-np1/bin/pip install -q -e . --no-deps
  touch .venv-np1/.installed
fi
.venv-np1/bin/python -c "import numpy; assert numpy.__version__.startswith('1.'), numpy.__version__; print('numpy', numpy.__version__)"

echo "== Jetson install: resolves nothing JetPack provides (here: numpy 1.26 and a cv2 without pip metadata)"
NP1_SITE=$(.venv-np1/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if .venv-np1/bin/pip show -q opencv-python-headless 2>/dev/null; then  # once: cv2 as apt puts it, no dist-info
  mkdir -p .venv-np1/system-site && cp -r "$NP1_SITE"/cv2 "$NP1_SITE"/opencv_python_headless.libs .venv-np1/system-site/
  .venv-np1/bin/pip uninstall -q -y opencv-python-headless
  echo "$PWD/.venv-np1/system-site" > "$NP1_SITE/jetpack_stand_in.pth"
fi
.venv-np1/bin/pip install -q --dry-run --report .venv-np1/jetson-install.json -e ".[jetson]"
.venv-np1/bin/python - .venv-np1/jetson-install.json <<'PY'
import importlib.metadata as md, json, re, sys
import cv2  # from the stand-in system site
assert not [d for d in md.distributions() if re.match(r"opencv", d.metadata["Name"] or "", re.I)], "cv2 has pip metadata"
names = sorted(i["metadata"]["name"].lower().replace("_", "-") for i in json.load(open(sys.argv[1]))["install"])
bad = [n for n in names if re.match(r"numpy|opencv|tensorrt|onnxruntime", n)]
assert not bad, "the Jetson install would put %s in front of JetPack's" % bad
print("jetson install resolves only:", ", ".join(names), "| cv2", cv2.__version__, "without pip metadata")
PY

NP1_TESTS=$(ls tests/test_runtime*.py tests/test_bundle*.py tests/test_preprocess*.py tests/test_postprocess*.py \
  tests/test_predictor*.py tests/test_tracking*.py tests/test_tensorrt*.py tests/test_demo*.py tests/test_triton*.py 2>/dev/null)
.venv-np1/bin/python -m pytest -q -p no:cacheprovider $NP1_TESTS
