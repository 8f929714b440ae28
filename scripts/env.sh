# Source me from bash: puts the colcon-built interface packages (scripts/build_msgs.sh: memsam_msgs and the vendored sensor interfaces) on the ROS search
# paths for shells and tools outside .venv/bin/python, and selects the large-image Fast DDS profile.
# Plain .venv/bin/python needs none of this for imports (build_msgs.sh hooks them into the venv).
_memsam_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
_memsam_pkg="$_memsam_root/install/memsam_ros"
_memsam_prepend() {  # _memsam_prepend VAR DIR: put DIR first in VAR once
  case ":${!1:-}:" in
    *":$2:"*) ;;
    *) export "$1=$2${!1:+:${!1}}" ;;
  esac
}
for _memsam_site in "$_memsam_pkg"/lib/python3*/site-packages; do
  [ -d "$_memsam_site" ] && _memsam_prepend PYTHONPATH "$_memsam_site"
done
_memsam_prepend LD_LIBRARY_PATH "$_memsam_pkg/lib"
_memsam_prepend AMENT_PREFIX_PATH "$_memsam_root/.venv"
_memsam_prepend AMENT_PREFIX_PATH "$_memsam_pkg"
export FASTDDS_DEFAULT_PROFILES_FILE="$_memsam_root/config/fastdds_shm.xml"
[ -d "$_memsam_pkg" ] || echo "scripts/env.sh: $_memsam_pkg missing, run bash scripts/build_msgs.sh" >&2
unset _memsam_root _memsam_pkg _memsam_site
unset -f _memsam_prepend
