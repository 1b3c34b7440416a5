# Sourced by the bench scripts: a scratch directory `$work` and a list `pids` of
# processes to stop, both cleaned up on exit however the script ends; and
# `install_missing CMD PKG [CMD PKG ...]`, which installs from Debian the packages
# whose command is missing; and `admin_token FILE`, which writes a random admin
# token (mode 0600) for processes started without `ldc up`; `ticks PID...`, the
# CPU ticks (user+sys) the processes used so far.
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

install_missing() {
    local missing=()
    while [ $# -ge 2 ]; do
        command -v "$1" >/dev/null 2>&1 || missing+=("$2")
        shift 2
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing ${missing[*]} from Debian"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

admin_token() {
    mkdir -p "$(dirname "$1")"
    (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$1")
}

ticks() {
    local total=0 pid
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
