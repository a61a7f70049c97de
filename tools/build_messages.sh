#!/usr/bin/env bash
# Builds msg/*.msg with the ROS 2 PyPI wheels' colcon into the venv (merge-install),
# so `from semla_ros.msg import SupportScore` works with no sourcing.
# Usage: tools/build_messages.sh VENV_DIR
set -euo pipefail
venv=$(cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
py="$venv/bin/python"
pyinc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
npinc=$("$py" -c 'import numpy; print(numpy.get_include())')

# The wheels' exported CMake targets name the include dirs of the machine that built them.
for f in "$venv"/share/*/cmake/*Export.cmake; do
  if grep -q '/opt/python/cp311-cp311' "$f"; then
    sed -i -E "s#/opt/python/cp311-cp311/include/python3\.11#${pyinc}#g; s#/opt/python/cp311-cp311/lib/python3\.11/site-packages/numpy/_core/include#${npinc}#g" "$f"
  fi
done

work="$repo/build/msgs"
mkdir -p "$work/src"
ln -sfn "$repo" "$work/src/semla_ros"
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
cd "$work"
"$venv/bin/colcon" --log-base "$work/log" build --merge-install \
  --build-base "$work/build" --install-base "$venv" \
  --event-handlers console_direct- \
  --cmake-args -DSEMLA_MESSAGES_ONLY=ON -DBUILD_TESTING=OFF \
  "-DPython3_EXECUTABLE=$py" -DPython3_FIND_VIRTUALENV=ONLY >/dev/null

# rosidl makes the generated folder a regular package; ours lives in the source tree
# (on sys.path through the editable install) and extends its __path__ to this folder.
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -f "$site/semla_ros/__init__.py"
rm -rf "$site/semla_ros/__pycache__"
