#!/usr/bin/env bash
# Start and stop a software TPM (swtpm) for tboot-py's demo and tests.
#
#   swtpm.sh start PORT STATEDIR [--banks sha1,sha256,sha384] [--ca-dir DIR]
#   swtpm.sh stop STATEDIR
#   swtpm.sh ca-dir            # print the default local CA directory
#
# On first start the state is manufactured with swtpm_setup: EK (RSA and ECC), an EK
# certificate and a platform certificate signed by a local CA (swtpm_localca), and the
# chosen PCR banks. The control channel listens on PORT+1. The TCTI string for tboot-py and
# tpm2-tools is then  swtpm:host=127.0.0.1,port=PORT
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
default_ca="${TBOOT_PY_CA_DIR:-$here/../.state/localca}"

die() { echo "swtpm.sh: $*" >&2; exit 2; }
absdir() { mkdir -p "$1" && (cd "$1" && pwd); }

cmd=${1:-}
case "$cmd" in
  start)
    [ $# -ge 3 ] || die "usage: swtpm.sh start PORT STATEDIR [--banks LIST] [--ca-dir DIR]"
    port=$2; state=$(absdir "$3"); shift 3
    banks=sha1,sha256,sha384; cadir=$default_ca
    while [ $# -gt 0 ]; do
      case "$1" in
        --banks) banks=$2; shift 2 ;;
        --ca-dir) cadir=$2; shift 2 ;;
        *) die "unknown option $1" ;;
      esac
    done
    [[ "$port" =~ ^[0-9]+$ ]] || die "port must be a number: $port"
    cadir=$(absdir "$cadir")
    conf="$state/conf"; mkdir -p "$conf"
    sed "s|@CONFDIR@|$conf|g" "$here/swtpm_setup.conf.in" > "$conf/swtpm_setup.conf"
    sed "s|@CADIR@|$cadir|g" "$here/swtpm-localca.conf.in" > "$conf/swtpm-localca.conf"
    cp "$here/swtpm-localca.options" "$conf/swtpm-localca.options"
    if [ ! -e "$state/tpm2-00.permall" ]; then
      # Serialise CA creation between parallel first starts.
      flock "$cadir/.lock" swtpm_setup --tpm2 --tpmstate "$state" --config "$conf/swtpm_setup.conf" \
        --createek --ecc --create-ek-cert --create-platform-cert --lock-nvram \
        --pcr-banks "$banks" --overwrite > "$state/setup.log" 2>&1 \
        || { cat "$state/setup.log" >&2; die "swtpm_setup failed"; }
    fi
    echo "$port" > "$state/port"
    swtpm socket --tpm2 --daemon \
      --tpmstate dir="$state" \
      --server type=tcp,port="$port",bindaddr=127.0.0.1 \
      --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
      --pid file="$state/swtpm.pid" \
      --log file="$state/swtpm.log",level=1 \
      --flags not-need-init,startup-clear
    # Wait until the command port accepts connections.
    for _ in $(seq 100); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { echo "swtpm:host=127.0.0.1,port=$port"; exit 0; }
      sleep 0.05
    done
    die "swtpm did not start on port $port (see $state/swtpm.log)"
    ;;
  stop)
    [ $# -ge 2 ] || die "usage: swtpm.sh stop STATEDIR"
    pidf="$2/swtpm.pid"
    if [ -f "$pidf" ] && [ -f "$2/port" ]; then
      # An orderly TPM2_Shutdown first, as an OS does at power-off: otherwise the next
      # start counts as a power loss and quotes report clockInfo.safe = NO.
      timeout 10 tpm2_shutdown -T "swtpm:host=127.0.0.1,port=$(cat "$2/port")" >/dev/null 2>&1 || true
    fi
    if [ -f "$pidf" ]; then
      pid=$(cat "$pidf")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$pidf"
    fi
    ;;
  ca-dir)
    absdir "$default_ca"
    ;;
  *)
    die "usage: swtpm.sh start|stop|ca-dir ..."
    ;;
esac
