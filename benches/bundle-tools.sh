#!/usr/bin/env bash
# Packs what benches/compare.sh needs into one folder, for a machine that has no package
# registry (such as the 16-CPU machine of benches/RESULTS.md): nginx, HAProxy,
# wrk, h2load, curl, taskset and pgrep with their shared libraries, nginx's echo module,
# and a stripped release build of Portcullis. Run it where those tools are installed
# (compare.sh installs them on Debian/Ubuntu), copy the folder to the other machine
# (same CPU architecture), and run there:
#
#   DIR/run.sh [compare.sh arguments]     e.g. DIR/run.sh --quick --workers 8 \
#                                                 --proxy-cpus 0-7 --load-cpus 8-15
#
# run.sh must be started as root from a checkout of this repository: it copies the echo
# module to /usr/lib/nginx/modules (where compare.sh looks for it), creates the
# www-data user nginx's workers run as if it is missing, puts the build where
# `compare.sh --no-build` expects it, and raises the open-files limit.
#
# Usage: benches/bundle-tools.sh DIR [--no-build]
set -euo pipefail

cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
DIR=$1
BUILD=1
[ "${2:-}" = --no-build ] && BUILD=0

log() { printf '[bundle] %s\n' "$*" >&2; }

TOOLS="nginx haproxy wrk h2load curl taskset pgrep"
for tool in $TOOLS; do
    command -v "$tool" >/dev/null || { log "$tool is not installed (run benches/compare.sh --quick once, or apt-get install it)"; exit 1; }
done
ECHO_MODULE=/usr/lib/nginx/modules/ngx_http_echo_module.so
[ -f "$ECHO_MODULE" ] || { log "$ECHO_MODULE is missing (apt-get install libnginx-mod-http-echo)"; exit 1; }

if [ "$BUILD" = 1 ]; then
    log "cargo build --release"
    cargo build --release >&2
fi

rm -rf "$DIR"
mkdir -p "$DIR/bin" "$DIR/real" "$DIR/lib"
strip -o "$DIR/portcullis" target/release/portcullis
cp "$ECHO_MODULE" "$DIR/"

for tool in $TOOLS; do
    path=$(command -v "$tool")
    cp "$path" "$DIR/real/$tool"
    # Every library the tool loads, except the C library itself and the C++ runtime,
    # which the other machine has in a version at least as new.
    ldd "$path" | awk '$3 ~ /^\// { print $3 }' | while read -r lib; do
        case "$(basename "$lib")" in
            libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | \
                libresolv.so* | libstdc++* | libgcc_s*) ;;
            *) cp -nL "$lib" "$DIR/lib/" ;;
        esac
    done
    # A wrapper that execs the tool with its libraries: the process keeps the PID that
    # compare.sh starts and measures.
    cat >"$DIR/bin/$tool" <<EOF
#!/bin/sh
here=\$(dirname "\$(readlink -f "\$0")")/..
LD_LIBRARY_PATH="\$here/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/real/$tool" "\$@"
EOF
    chmod +x "$DIR/bin/$tool"
done

cat >"$DIR/run.sh" <<'EOF'
#!/usr/bin/env bash
# Runs benches/compare.sh with the tools of this bundle (see benches/bundle-tools.sh).
set -euo pipefail
bundle=$(cd "$(dirname "$0")" && pwd)
[ -f benches/compare.sh ] || { echo "run this from a checkout of portcullis" >&2; exit 2; }
# The machine's own tools come first where it has them.
export PATH=$PATH:$bundle/bin
ulimit -n 65536 2>/dev/null || ulimit -n 20000
# Replaced only when it differs, and by renaming a copy: writing over a module that a
# running nginx has loaded crashes that nginx's workers.
module=/usr/lib/nginx/modules/ngx_http_echo_module.so
if ! cmp -s "$bundle/ngx_http_echo_module.so" "$module"; then
    mkdir -p "$(dirname "$module")"
    cp "$bundle/ngx_http_echo_module.so" "$module.new"
    mv "$module.new" "$module"
fi
id www-data >/dev/null 2>&1 || useradd -r -M www-data
mkdir -p target/release
cp "$bundle/portcullis" target/release/portcullis
exec bash benches/compare.sh --no-build "$@"
EOF
chmod +x "$DIR/run.sh"

log "$DIR: $(du -sh "$DIR" | cut -f1); on the other machine: $DIR/run.sh --quick ..."
for tool in $TOOLS; do
    if LD_LIBRARY_PATH=$DIR/lib ldd "$DIR/real/$tool" | grep -q 'not found'; then
        log "warning: $DIR/real/$tool misses a library:"
        LD_LIBRARY_PATH=$DIR/lib ldd "$DIR/real/$tool" | grep 'not found' >&2
    fi
done
