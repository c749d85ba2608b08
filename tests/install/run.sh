#!/usr/bin/env bash
# Install test of the Debian package: boots a clean Debian 12 with systemd as PID 1 under
# systemd-nspawn, installs the .deb with apt exactly like on a store's mini-PC, and checks the
# service end to end: running and enabled, hardening score, /healthz and the UI, device
# credentials over MQTT, the watchdog, a reboot, purge, an upgrade from the previous package
# that keeps data and an edited config, and self-updates through HQ: storebox-hq.service runs in
# the container, the test uploads signed releases and starts rollouts there, the store takes
# them from HQ's feed and the root update helper (storebox-updater) installs: a signed next
# version ends up running and committed (HQ's rollout completed), a version that fails its health
# check is rolled back by itself and HQ aborts its rollout, a tampered package is refused by HQ.
# Then the helper's own checks: no way back, a reused serial, a tampered package, a power loss
# mid-install, a rollback the store asks for. Prints PASS/FAIL per check and "N passed, M
# failed"; exits non-zero if any check failed.
#
# Usage: tests/install/run.sh [CURRENT.deb [NEXT.deb]]
#   Without an argument the package is built with scripts/build-deb.sh. The "previous" package
#   is made from it: version <version>~prev1 and a different default config, so that dpkg sees a
#   conffile changed on both sides on upgrade. NEXT.deb (default: built with
#   `scripts/build-deb.sh --deb-version <upstream version>+upd1`) is the version the self-update installs;
#   it must report its own version (`storebox version`).
# Needs root and: systemd-nspawn (systemd-container), debootstrap, zstd, nsenter (util-linux),
# curl, jq, mosquitto_pub (mosquitto-clients), lintian, dpkg-deb. .ci/run installs them.
#
# Works on hosts whose PID 1 is not systemd: the container runs with --register=no --keep-unit
# and commands enter it with nsenter. It has a private network namespace (only its own
# loopback), so the packaged listen addresses 0.0.0.0:8080/1883 cannot clash with anything on
# the host and no test traffic leaves loopback. Debian's base rootfs is debootstrapped once and
# cached as a tarball in $CACHE (default /var/cache/storebox-ci).
#
# Env: CACHE=/var/cache/storebox-ci  WORK=<temp dir>  SUITE=bookworm  MIRROR=<apt mirror URL,
#      default: the host's>  KEEP=1 (leave the rootfs for inspection)
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT_DIR=$PWD

CACHE=${CACHE:-/var/cache/storebox-ci}
SUITE=${SUITE:-bookworm}
# The package's dependencies (tzdata, openssl for the certificate postinst generates) are in the
# base: the container has no network, so apt cannot fetch them while it installs the package.
INCLUDE=systemd-sysv,dbus,libnss-systemd,tzdata,openssl
WORK=${WORK:-$(mktemp -d /var/tmp/storebox-install-test.XXXXXX)}
RUNROOT=$WORK/rootfs
DEBDIR=$WORK/debs
LOG=$WORK/nspawn.log
HTTP=127.0.0.1:8080   # inside the container's own network namespace
MQTT_PORT=1883
CONF=/etc/storebox/storebox.toml

T_START=$(date +%s)
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
step() { echo; echo "== $* (t=$(since "$T_START") s)"; }
die() { echo "FATAL: $*" >&2; exit 1; }

PASSED=0; FAILED=0; FAILED_NAMES=()
pass() { PASSED=$((PASSED + 1)); echo "PASS: $1"; }
fail() { FAILED=$((FAILED + 1)); FAILED_NAMES+=("$1"); echo "FAIL: $1${2:+ -- $2}"; }
# check NAME CMD...: PASS if CMD exits 0
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, systemd-nspawn)"
for c in systemd-nspawn debootstrap zstd nsenter curl jq mosquitto_pub lintian dpkg-deb; do
  command -v "$c" >/dev/null || die "missing tool: $c (.ci/run installs it)"
done

# ---------------------------------------------------------------------------------------------
# Container helpers (adapted from the shared nspawn recipe).
NSPID=; LEADER=
ct() { timeout 120 nsenter -t "$LEADER" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
ctnet() { timeout 60 nsenter -t "$LEADER" -n "$@"; }   # host tool inside the container's network
stop_ct() {   # clean poweroff; escalate if systemd inside does not answer
  [ -n "$NSPID" ] && kill -0 "$NSPID" 2>/dev/null || { NSPID=; return 0; }
  kill -TERM "$NSPID"                       # nspawn -> SIGRTMIN+3 to PID 1 inside -> poweroff
  for _ in $(seq 1 150); do kill -0 "$NSPID" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$NSPID" 2>/dev/null; then
    echo "container did not power off within 30 s; killing it"
    kill -TERM "$NSPID"; sleep 2
    if kill -0 "$NSPID" 2>/dev/null; then
      { [ -n "$LEADER" ] && [ "$(cat "/proc/$LEADER/comm" 2>/dev/null)" = systemd ] && kill -KILL "$LEADER"; } || true
      kill -KILL "$NSPID" 2>/dev/null || true
    fi
  fi
  wait "$NSPID" 2>/dev/null || true
  NSPID=; LEADER=
}
cleanup() {
  local rc=$?
  stop_ct
  if [ "${KEEP:-0}" = 1 ]; then echo "KEEP=1: rootfs left in $RUNROOT"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

boot_ct() {   # start the container, find its PID 1, wait (bounded) until boot has finished
  systemd-nspawn --quiet --register=no --keep-unit --console=pipe --private-network \
    -M "sbtest$$" -D "$RUNROOT" --bind-ro="$DEBDIR:/srv/debs" -b >> "$LOG" 2>&1 < /dev/null &
  NSPID=$!; LEADER=
  local c
  for _ in $(seq 1 300); do
    c=$( (ps -o pid= --ppid "$NSPID" || true) | tr -d ' ' | head -1)
    if [ -n "$c" ] && [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ]; then LEADER=$c; break; fi
    kill -0 "$NSPID" 2>/dev/null || { tail -20 "$LOG"; die "systemd-nspawn exited"; }
    sleep 0.1
  done
  [ -n "$LEADER" ] || { tail -20 "$LOG"; die "no systemd PID 1 in the container after 30 s"; }
  BOOT_STATE=
  for _ in $(seq 1 120); do   # 'offline' until systemd's private socket is up
    BOOT_STATE=$(ct systemctl is-system-running --wait 2>/dev/null || true)
    case "$BOOT_STATE" in running|degraded) break;; esac; sleep 0.5
  done
  case "$BOOT_STATE" in running|degraded) ;; *) die "container did not finish booting: $BOOT_STATE";; esac
  [ "$BOOT_STATE" = running ] || ct systemctl --failed --no-pager || true
}

apt_ct() {   # apt-get inside, non-interactive; keeps edited conffiles on upgrade without asking
  ct env DEBIAN_FRONTEND=noninteractive apt-get -y -q \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

unit_prop() { ct systemctl show -p "$1" --value storebox 2>/dev/null; }

# wait_for SECONDS CMD...: retries CMD every 0.5 s until it succeeds or the time is up
wait_for() {
  local secs=$1; shift
  local end=$(( $(date +%s) + secs ))
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.5
  done
}

healthz() { ctnet curl -fsS --max-time 3 "http://$HTTP/healthz"; }
as_storebox() { ct runuser -u storebox -- /usr/bin/storebox --config "$CONF" "$@"; }

# mqtt_pub USER PASSWORD (empty USER: anonymous); prints mosquitto_pub's output
mqtt_pub() {
  local auth=()
  [ -n "$1" ] && auth=(-i "$1" -u "$1" -P "$2")
  ctnet mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" "${auth[@]}" -q 1 \
    -t "devices/${1:-anon}/status" -r -m "{\"online\":true,\"firmware\":\"${3:-1.0.0}\"}" 2>&1
}

service_ok() {   # active + enabled + /healthz
  [ "$(ct systemctl is-active storebox)" = active ] && [ "$(ct systemctl is-enabled storebox)" = enabled ] && healthz >/dev/null
}

# ---------------------------------------------------------------------------------------------
step "packages"
mkdir -p "$DEBDIR"
if [ $# -ge 1 ]; then
  cp "$1" "$DEBDIR/current.deb"
else
  T=$(now)
  scripts/build-deb.sh --output "$DEBDIR/current.deb" || die "building the package failed"
  echo "built the package in $(since "$T") s"
fi
# The previous release: the same package with a lower version and a different default config,
# so that the upgrade meets a conffile changed both by the package and by the admin, which must
# not stop apt with a question.
CUR_VERSION=$(dpkg-deb -f "$DEBDIR/current.deb" Version)
PREV_VERSION="${CUR_VERSION}~prev1"
X=$WORK/prev-x; rm -rf "$X"; dpkg-deb -R "$DEBDIR/current.deb" "$X" || die "unpacking the package failed"
sed -i "s/^Version: .*/Version: $PREV_VERSION/" "$X/DEBIAN/control"
sed -i 's/^name = "Local store"/name = "Store"/' "$X/etc/storebox/storebox.toml"
(cd "$X" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums)
dpkg-deb --root-owner-group -Zxz -z1 -b "$X" "$DEBDIR/previous.deb" >/dev/null || die "packing the previous package failed"
rm -rf "$X"
echo "current $CUR_VERSION ($(du -k "$DEBDIR/current.deb" | cut -f1) KiB), previous $PREV_VERSION"
dpkg --compare-versions "$PREV_VERSION" lt "$CUR_VERSION" || die "previous version $PREV_VERSION is not lower than $CUR_VERSION"

# The self-update's versions. NEXT: built with the version override (only storebox recompiles).
# BAD: NEXT repacked as a higher version whose `storebox serve` exits at once (every other
# subcommand, the update helper's included, runs NEXT's binary): a version that fails its health
# check after install.
NEXT_VERSION="${CUR_VERSION%-*}+upd1"   # upstream part + upd1: above CUR whatever its revision
if [ $# -ge 2 ]; then
  cp "$2" "$DEBDIR/next.deb"
else
  T=$(now)
  scripts/build-deb.sh --deb-version "$NEXT_VERSION" --output "$DEBDIR/next.deb" || die "building $NEXT_VERSION failed"
  echo "built $NEXT_VERSION in $(since "$T") s"
fi
NEXT_VERSION=$(dpkg-deb -f "$DEBDIR/next.deb" Version)
BAD_VERSION="${NEXT_VERSION}+bad"
X=$WORK/bad-x; rm -rf "$X"; dpkg-deb -R "$DEBDIR/next.deb" "$X" || die "unpacking the next package failed"
sed -i "s/^Version: .*/Version: $BAD_VERSION/" "$X/DEBIAN/control"
mkdir -p "$X/usr/lib/storebox"; mv "$X/usr/bin/storebox" "$X/usr/lib/storebox/storebox-real"
cat > "$X/usr/bin/storebox" <<SH
#!/bin/sh
# install test's bad version $BAD_VERSION: serve fails at once; everything else is $NEXT_VERSION.
for a in "\$@"; do
  if [ "\$a" = serve ]; then echo "storebox $BAD_VERSION: serve fails on purpose (install test)" >&2; exit 1; fi
done
exec /usr/lib/storebox/storebox-real "\$@"
SH
chmod 755 "$X/usr/bin/storebox"
(cd "$X" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums)
dpkg-deb --root-owner-group -Zxz -z1 -b "$X" "$DEBDIR/bad.deb" >/dev/null || die "packing the bad package failed"
rm -rf "$X"
HOSTBIN=$WORK/host-bin; mkdir -p "$HOSTBIN"
dpkg-deb --fsys-tarfile "$DEBDIR/next.deb" | tar -xO ./usr/bin/storebox > "$HOSTBIN/storebox" && chmod 755 "$HOSTBIN/storebox"
check "the next package's binary reports its version $NEXT_VERSION" test "$("$HOSTBIN/storebox" version)" = "storebox $NEXT_VERSION"
dpkg --compare-versions "$CUR_VERSION" lt "$NEXT_VERSION" && dpkg --compare-versions "$NEXT_VERSION" lt "$BAD_VERSION" \
  || die "versions not in order: $CUR_VERSION < $NEXT_VERSION < $BAD_VERSION"
echo "self-update versions: next $NEXT_VERSION, bad $BAD_VERSION"

step "lintian"
LINTIAN_OUT=$(lintian --no-cfg --fail-on error "$DEBDIR/current.deb" 2>&1); LINTIAN_RC=$?
echo "$LINTIAN_OUT" | sed 's/^/  /'
if [ $LINTIAN_RC = 0 ] && ! grep -q '^E:' <<<"$LINTIAN_OUT"; then pass "lintian: no errors"; else fail "lintian: no errors"; fi

# ---------------------------------------------------------------------------------------------
step "base rootfs"
mkdir -p "$CACHE"
KEY=$(echo "$SUITE $INCLUDE" | md5sum | cut -c1-8)
BASE_TAR=$CACHE/debian-$SUITE-$KEY.tar.zst
if [ ! -s "$BASE_TAR" ]; then
  if [ -z "${MIRROR:-}" ]; then
    MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$MIRROR" ] || MIRROR=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  fi
  [ -n "$MIRROR" ] || die "no Debian mirror found in the host's apt sources; set MIRROR"
  T=$(now); B=$WORK/base
  timeout 900 debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$B" "$MIRROR" \
    > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
  echo "$SUITE-storebox-test" > "$B/etc/hostname"
  rm -f "$B/etc/machine-id"; : > "$B/etc/machine-id"   # a fresh id on every boot
  chroot "$B" apt-get clean
  tar -C "$B" -cf - . | zstd -q -T0 -3 -o "$BASE_TAR.tmp" && mv "$BASE_TAR.tmp" "$BASE_TAR"
  rm -rf "$B"
  echo "debootstrap + tarball: $(since "$T") s -> $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1))"
else
  echo "cached: $BASE_TAR"
fi
T=$(now); mkdir -p "$RUNROOT"; zstd -dc "$BASE_TAR" | tar -C "$RUNROOT" -xf - || die "unpacking the base failed"
echo "unpacked in $(since "$T") s"

step "boot"
T=$(now); boot_ct
echo "booted in $(since "$T") s, state=$BOOT_STATE, PID 1=$(ct cat /proc/1/comm), $(ct systemctl --version | head -1)"
LISTENING=$(ctnet ss -Htln "( sport = :8080 or sport = :$MQTT_PORT )" 2>/dev/null || true)
[ -z "$LISTENING" ] || die "ports 8080/$MQTT_PORT already in use inside the container: $LISTENING"

# ---------------------------------------------------------------------------------------------
step "fresh install: apt install ./storebox_${CUR_VERSION}_amd64.deb"
T=$(now)
if apt_ct install /srv/debs/current.deb > "$WORK/apt-install.log" 2>&1; then
  pass "apt install of $CUR_VERSION on a clean Debian $SUITE"
else
  fail "apt install of $CUR_VERSION on a clean Debian $SUITE"; tail -30 "$WORK/apt-install.log"
fi
echo "apt install: $(since "$T") s"
sed -n '/storebox is installed/,/install.md/p' "$WORK/apt-install.log" | sed 's/^/  | /'
check "postinst says how to create the first admin" grep -q 'user add NAME --role admin' "$WORK/apt-install.log"

check "storebox.service is active" test "$(ct systemctl is-active storebox)" = active
check "storebox.service is enabled" test "$(ct systemctl is-enabled storebox)" = enabled
check "storebox-hq.service is installed but not enabled" test "$(ct systemctl is-enabled storebox-hq)" = disabled
check "service runs as user storebox" test "$(ct stat -c %U "/proc/$(unit_prop MainPID)")" = storebox
check "Type=notify, watchdog armed" test "$(unit_prop Type) $(unit_prop WatchdogUSec)" = "notify 15s"
check "/healthz answers" wait_for 10 healthz
# Start to READY=1 under systemd, ExecStartPre (check-config) included.
echo "  start to ready under systemd: $(( ($(unit_prop ActiveEnterTimestampMonotonic) - $(unit_prop InactiveExitTimestampMonotonic)) / 1000 )) ms"
UI=$(ctnet curl -sS -L --max-time 5 -w '\nHTTP %{http_code} %{content_type}' "http://$HTTP/" 2>&1 || true)
echo "  GET / -> $(tail -1 <<<"$UI")"
ui_ok() { grep -q '<title>storebox' <<<"$UI" && tail -1 <<<"$UI" | grep -q '^HTTP 200 text/html'; }
check "the UI's first page loads (200, text/html, <title>storebox)" ui_ok
check "setup code for the first admin is in the journal" wait_for 5 ct sh -c 'journalctl -u storebox --no-pager | grep -q setup_code'
check "data in /var/lib/storebox, owned by storebox, database not world-readable" \
  test "$(ct stat -c '%U %a' /var/lib/storebox /var/lib/storebox/storebox.db | tr '\n' ' ')" = "storebox 750 storebox 600 "
check "log files in /var/log/storebox" ct sh -c 'ls /var/log/storebox/storebox.*log >/dev/null'
check "no hq admin token on a box that has not started HQ" ct sh -c '! test -e /etc/storebox/hq-admin.token'
check "HQ runs as its own user storebox-hq" ct getent passwd storebox-hq >/dev/null
ct systemctl start storebox-hq
check "storebox-hq starts and generates its admin token, 0640 root:storebox-hq" \
  test "$(ct systemctl is-active storebox-hq) $(ct stat -c '%U:%G %a' /etc/storebox/hq-admin.token)" = "active root:storebox-hq 640"
check "HQ's process runs as storebox-hq" test "$(ct systemctl show -p User --value storebox-hq)" = storebox-hq
check "the store's user cannot read the HQ admin token" ct sh -c '! runuser -u storebox -- cat /etc/storebox/hq-admin.token >/dev/null 2>&1'
check "packaged hq.toml passes check-config (as the HQ user)" ct runuser -u storebox-hq -- storebox check-config --config /etc/storebox/hq.toml >/dev/null
ct systemctl stop storebox-hq

SEC=$(ct systemd-analyze security storebox.service --no-pager 2>&1 | sed -n 's/.*Overall exposure level for storebox.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security storebox.service: ${SEC:-?}"
check "systemd-analyze security storebox.service exposure <= 2.0 (got ${SEC:-none})" awk -v s="${SEC:-99}" 'BEGIN{exit !(s<=2.0)}'
SEC_HQ=$(ct systemd-analyze security storebox-hq.service --no-pager 2>&1 | sed -n 's/.*Overall exposure level for storebox-hq.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security storebox-hq.service exposure <= 2.0 (got ${SEC_HQ:-none})" awk -v s="${SEC_HQ:-99}" 'BEGIN{exit !(s<=2.0)}'
VERIFY=$(ct systemd-analyze verify /usr/lib/systemd/system/storebox.service /usr/lib/systemd/system/storebox-hq.service 2>&1)
check "systemd-analyze verify: both units clean${VERIFY:+ ($VERIFY)}" test -z "$VERIFY"

step "devices over MQTT"
ADD=$(as_storebox device add lane-1 --kind lane 2>&1)
PW=$(sed -n 's/^ *password: *//p' <<<"$ADD")
check "storebox device add prints credentials" test -n "$PW"
# The admin CLI as an operator types it: no --config (the package's /etc/storebox/storebox.toml
# is the default), and a clear refusal, naming the command to run, for any other user.
ADD2=$(ct runuser -u storebox -- storebox device add lane-2 --kind lane 2>&1)
check "device add without --config uses the package's config (broker 0.0.0.0:1883)" grep -q 'broker: *0\.0\.0\.0:1883' <<<"$ADD2"
in_service_db() { as_storebox device list | grep -q "^$1 "; }
check "... and the service's database (lane-2 listed with --config)" in_service_db lane-2
OUT=$(ct storebox device add lane-3 --kind lane 2>&1); RC=$?
echo "  as root: exit $RC: $OUT"
check "device add as root is refused, saying: sudo -u storebox storebox device add …" \
  test "$RC" != 0 -a -n "$(grep -F 'sudo -u storebox storebox device add lane-3 --kind lane' <<<"$OUT")"
ct useradd --no-create-home --shell /usr/sbin/nologin clerk
OUT=$(ct runuser -u clerk -- storebox device add lane-4 --kind lane 2>&1); RC=$?
echo "  as clerk: exit $RC: $OUT"
check "device add as an unprivileged user is refused, saying: sudo -u storebox …" \
  test "$RC" != 0 -a -n "$(grep -F 'sudo -u storebox storebox device add lane-4 --kind lane' <<<"$OUT")"
added_nothing() { ! in_service_db lane-3 && ! in_service_db lane-4; }
check "the refused commands added nothing" added_nothing
check "no file in /var/lib/storebox belongs to another user" test -z "$(ct find /var/lib/storebox ! -user storebox)"
OUT=$(mqtt_pub lane-1 "$PW" 1.0.0); RC=$?
check "MQTT client connects and publishes with the device's credentials" test $RC = 0
[ $RC = 0 ] || echo "  $OUT"
firmware_stored() { as_storebox device list | grep -q '^lane-1 .*1\.0\.0'; }
check "the box stored what the device sent (firmware 1.0.0 in device list)" wait_for 10 firmware_stored
# The broker refuses a login by closing the connection before CONNACK (docs/mqtt.md), and counts
# it in storebox_mqtt_auth_failures_total; the client must fail and the counter must move.
auth_failures() { ctnet curl -fsS --max-time 5 "http://$HTTP/metrics" | awk '$1 ~ /^storebox_mqtt_auth_failures(_total)?$/ {print $2}'; }
F0=$(auth_failures)
OUT=$(mqtt_pub "" ""); RC=$?; F1=$(auth_failures)
echo "  anonymous: exit $RC, ${OUT//$'\n'/ } auth failures $F0 -> $F1"
check "anonymous MQTT client is refused (counted as an auth failure)" test "$RC" != 0 -a -n "$F0" -a "${F1:-0}" = "$((F0 + 1))"
OUT=$(mqtt_pub lane-1 wrong-password); RC=$?; F2=$(auth_failures)
echo "  wrong password: exit $RC, ${OUT//$'\n'/ } auth failures $F1 -> $F2"
check "MQTT login with a wrong password is refused (counted)" test "$RC" != 0 -a -n "$F1" -a "${F2:-0}" = "$((F1 + 1))"

step "watchdog: SIGSTOP the main process"
PID1=$(unit_prop MainPID); N1=$(unit_prop NRestarts)
T=$(now)
ct sh -c "kill -STOP $PID1"
restarted() { local p; p=$(unit_prop MainPID); [ "$(unit_prop NRestarts)" -gt "$N1" ] && [ "$p" != 0 ] && [ "$p" != "$PID1" ] && [ "$(ct systemctl is-active storebox)" = active ]; }
check "watchdog restarts the frozen service" wait_for 60 restarted
echo "  restarted after $(since "$T") s: MainPID $PID1 -> $(unit_prop MainPID), NRestarts $N1 -> $(unit_prop NRestarts)"
check "journal shows the watchdog as the reason" ct sh -c "journalctl -u storebox --no-pager | grep -q \"Failed with result 'watchdog'\""
check "/healthz answers after the restart" wait_for 15 healthz

step "reboot the container"
stop_ct; T=$(now); boot_ct
echo "rebooted in $(since "$T") s"
check "after reboot: active, enabled, /healthz answers" wait_for 30 service_ok
OUT=$(mqtt_pub lane-1 "$PW" 1.0.1); RC=$?
check "after reboot: the device's credentials still work (data kept)" test $RC = 0

step "purge"
apt_ct purge storebox > "$WORK/apt-purge.log" 2>&1; RC=$?
check "apt purge storebox succeeds" test $RC = 0
no_process() { ct sh -c 'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = storebox ] && exit 1; done; exit 0'; }
check "after purge: no storebox process left" no_process
check "after purge: binary and unit files gone" ct sh -c '! test -e /usr/bin/storebox && ! test -e /usr/lib/systemd/system/storebox.service && ! systemctl cat storebox.service >/dev/null 2>&1'
check "after purge: config, data and logs removed" ct sh -c '! test -e /etc/storebox && ! test -e /var/lib/storebox && ! test -e /var/log/storebox'
check "after purge: nothing listens on 8080/1883" test -z "$(ctnet ss -Htln "( sport = :8080 or sport = :$MQTT_PORT )")"

# ---------------------------------------------------------------------------------------------
step "upgrade: install $PREV_VERSION, add data, edit the config, upgrade to $CUR_VERSION"
apt_ct install /srv/debs/previous.deb > "$WORK/apt-prev.log" 2>&1; RC=$?
check "install of previous $PREV_VERSION" test "$RC $(ct dpkg-query -W -f='${Version}' storebox)" = "0 $PREV_VERSION"
check "previous version is running" wait_for 20 service_ok
ADD=$(as_storebox device add scale-7 --kind scale 2>&1)
PW7=$(sed -n 's/^ *password: *//p' <<<"$ADD")
check "device added on the previous version" test -n "$PW7"
ct sed -i 's/^name = .*/name = "Edited by the admin"/; s/^level = "info"/level = "debug"/' "$CONF"
ct systemctl restart storebox
check "previous version runs the edited config" wait_for 20 service_ok
# HQ started once on the previous version: its admin token (made at HQ's first start) must survive.
ct systemctl start storebox-hq
ct systemctl stop storebox-hq
HQ_TOKEN_BEFORE=$(ct sha256sum /etc/storebox/hq-admin.token 2>/dev/null)
check "previous version's HQ made its admin token" test -n "$HQ_TOKEN_BEFORE"
apt_ct install /srv/debs/current.deb > "$WORK/apt-upgrade.log" 2>&1; RC=$?
grep -i 'conffile\|storebox.toml' "$WORK/apt-upgrade.log" | sed 's/^/  | /'
check "apt upgrade to $CUR_VERSION succeeds without a prompt" test $RC = 0
check "installed version is now $CUR_VERSION" test "$(ct dpkg-query -W -f='${Version}' storebox)" = "$CUR_VERSION"
check "edited config kept (new default saved as storebox.toml.dpkg-dist)" \
  ct sh -c "grep -q '^name = \"Edited by the admin\"' $CONF && grep -q '^level = \"debug\"' $CONF && test -e $CONF.dpkg-dist"
check "after upgrade: active, enabled, /healthz answers" wait_for 30 service_ok
check "after upgrade: running the new binary (restarted by the upgrade)" ct sh -c \
  "test \"\$(readlink /proc/\$(systemctl show -p MainPID --value storebox)/exe)\" = /usr/bin/storebox"
OUT=$(mqtt_pub scale-7 "$PW7" 2.0.0); RC=$?
check "after upgrade: the device added before still connects (data kept)" test $RC = 0
check "after upgrade: the hq admin token was kept (same token, 0640 root:storebox-hq)" test \
  "$(ct stat -c '%U:%G %a' /etc/storebox/hq-admin.token) $(ct sha256sum /etc/storebox/hq-admin.token)" = \
  "root:storebox-hq 640 $HQ_TOKEN_BEFORE"
# ---------------------------------------------------------------------------------------------
# Self-update (docs/releases.md). HQ runs inside the container (storebox-hq.service, trusting the
# test's release key, rollout engine ticking every second) and the store is one of its stores;
# the release engineer is this script: it signs on the host with `storebox release sign`, uploads
# with `POST /hq/v1/releases` and starts rollouts with `POST /hq/v1/rollouts` (curl from the host
# inside the container's network namespace). The store process downloads, verifies, stages,
# waits for its window and writes request.json; the root helper (storebox-updater.path/.service)
# installs; the store's probation commits; every state reaches HQ as release.status.
# The helper's own refusals and repairs that no HQ flow reaches (no way back, a reused serial, a
# tampered package handed to the helper, a power loss mid-install, a rollback the store asks for)
# are driven by writing request.json here as the store would ("store (simulated)" below).
step "self-update: HQ in the container; $CUR_VERSION -> $NEXT_VERSION, a bad $BAD_VERSION, a tampered package; helper checks"
UPD_T0=$(date +%s); UPD_BUDGET=420   # the whole phase must finish within this many seconds
UPD=/var/lib/storebox/updates
STAGED=$UPD/staged
KEYS=$WORK/keys
STORE_ID=store-local   # the packaged config's store.id
HQ_HTTP=127.0.0.1:8090 # the packaged hq.toml's listen, inside the container
"$HOSTBIN/storebox" release keygen --out "$KEYS" >/dev/null || die "release keygen failed"
PUB=$(cat "$KEYS/release.pub")
sign() {   # sign NAME: signs $DEBDIR/NAME (manifest next to it), prints the serial
  "$HOSTBIN/storebox" release sign --key "$KEYS/release.key" --expires-days 2 "$DEBDIR/$1" >/dev/null \
    || die "signing $1 failed"
  jq -r .serial "$DEBDIR/$1.manifest.json"
}
# Signed in the order they are used, so each serial is above every one the helper saw before.
cp "$DEBDIR/next.deb" "$DEBDIR/u-next.deb"; S_UNEXT=$(sign u-next.deb)       # no way back
cp "$DEBDIR/next.deb" "$DEBDIR/h-next.deb"; S_NEXT=$(sign h-next.deb)        # through HQ
cp "$DEBDIR/bad.deb" "$DEBDIR/h-bad.deb"; S_BAD=$(sign h-bad.deb)            # through HQ
cp "$DEBDIR/bad.deb" "$DEBDIR/h-tampered.deb"; S_TAMPERED=$(sign h-tampered.deb)  # HQ and helper
cp "$DEBDIR/bad.deb" "$DEBDIR/u-powerloss.deb"; S_POWER=$(sign u-powerloss.deb)   # power loss
# The tampered one: one byte flipped after signing (the manifest stays valid).
SZ=$(stat -c %s "$DEBDIR/h-tampered.deb"); OFF=$((SZ / 2))
B=$(od -An -tu1 -j "$OFF" -N1 "$DEBDIR/h-tampered.deb" | tr -d ' ')
printf "\\$(printf %03o $((B ^ 1)))" | dd of="$DEBDIR/h-tampered.deb" bs=1 seek="$OFF" conv=notrunc status=none
echo "  signed with key $(cut -c1-20 <<<"$PUB")…: serials no-way-back $S_UNEXT, next $S_NEXT, bad $S_BAD, tampered $S_TAMPERED, power-loss $S_POWER"

# HQ: the packaged hq.toml plus the release key and a 1 s rollout tick; the store registered in
# group pilot, its token in /etc/storebox/hq.token (0640 root:storebox).
T=$(now)
ct sed -i -e '/^\[hq_server\]/a rollout_tick_seconds = 1' \
  -e "/^\[hq_server\]/a release_public_keys = [\"$PUB\"]" /etc/storebox/hq.toml
hq_config_ok() { ct runuser -u storebox-hq -- storebox check-config --config /etc/storebox/hq.toml >/dev/null; }
check "hq.toml with release_public_keys passes check-config (as the HQ user)" hq_config_ok
ct systemctl start storebox-hq
hq_up() { ctnet curl -fsS --max-time 3 "http://$HQ_HTTP/healthz"; }
check "storebox-hq.service runs in the container and answers" wait_for 30 hq_up
HQ_ADMIN=$(ct cat /etc/storebox/hq-admin.token)
hq_get() { ctnet curl -fsS --max-time 10 -H "Authorization: Bearer $HQ_ADMIN" "http://$HQ_HTTP$1"; }
OUT=$(ct runuser -u storebox-hq -- storebox hq store add "$STORE_ID" --group pilot 2>"$WORK/hq-store-add.err"); RC=$?
[ "$RC" = 0 ] || cat "$WORK/hq-store-add.err"
STORE_TOKEN=$(tail -1 <<<"$OUT")
check "storebox hq store add $STORE_ID --group pilot prints a token" test "$RC" = 0 -a -n "$STORE_TOKEN"
ct sh -c "umask 027 && printf '%s\n' '$STORE_TOKEN' > /etc/storebox/hq.token && chgrp storebox /etc/storebox/hq.token"

# The store: [hq] url + token_file; [updates] public_key, a window around now and trading hours
# away from it (store.timezone is UTC), a 10 s probation. The root-owned config also holds the
# key the helper trusts.
H=$(date -u +%-H)
hh() { printf '%02d:00' $(( ($1 + 24) % 24 )); }
WINDOW="$(hh $((H - 1)))-$(hh $((H + 3)))"; TRADING="$(hh $((H + 5)))-$(hh $((H + 8)))"
ct sed -i "/^\[hq\]/,/^\[/ s|^url = .*|url = \"http://$HQ_HTTP\"\ntoken_file = \"/etc/storebox/hq.token\"|" "$CONF"
UPD_KEYS="public_key = \"$PUB\"\nwindow = \"$WINDOW\"\ntrading_hours = \"$TRADING\"\nprobation_seconds = 10"
if ct grep -q '^\[updates\]' "$CONF"; then
  ct sed -i "/^\[updates\]/a $UPD_KEYS" "$CONF"
else
  ct sh -c "printf '\n[updates]\n$UPD_KEYS\n' >> $CONF"
fi
CC=$(as_storebox check-config 2>&1); echo "$CC" | sed 's/^/  | /'
check "store config with [hq] and [updates] passes check-config (updates on, window $WINDOW, trading hours $TRADING)" \
  grep -q "updates on: install window $WINDOW" <<<"$CC"
ct systemctl restart storebox
check "the store runs with HQ configured" wait_for 30 service_ok
check "storebox-updater.path is enabled and active (shipped in the package)" \
  test "$(ct systemctl is-enabled storebox-updater.path) $(ct systemctl is-active storebox-updater.path)" = "enabled active"
check "storebox-updater.service is a oneshot of its own, not started by the package" \
  test "$(ct systemctl show -p Type --value storebox-updater) $(ct systemctl is-active storebox-updater)" = "oneshot inactive"

# Data written before the updates: a device and an API token (the token also reads the running
# version from /api/v1/status and the update state from /api/v1/updates).
as_storebox device add upd-scale --kind scale > /dev/null 2>&1
API_TOKEN=$(as_storebox token add upd-check --role staff 2>/dev/null | tail -1)
api_get() { ctnet curl -fsS --max-time 3 -H "Authorization: Bearer $API_TOKEN" "http://$HTTP/api/v1/$1"; }
api_version() { api_get status | jq -r .version; }
store_updates() { api_get updates | jq -r "$1"; }
data_ok() {   # the devices added before, and the API token still reads the API
  local list v
  list=$(as_storebox device list 2>&1); v=$(api_version)
  grep -q '^upd-scale ' <<<"$list" && grep -q '^scale-7 ' <<<"$list" && [ -n "$v" ] && return 0
  DATA_WHY="API version '$v', NRestarts $(unit_prop NRestarts), device list: $(head -c 800 <<<"$list" | tr '\n' '|')"
  return 1
}
# A box that has just (re)started may answer a moment later: the data must read back within 15 s.
data_intact() {
  wait_for 15 data_ok && return 0
  echo "  data check: $DATA_WHY"
  ct journalctl -u storebox --no-pager -n 15 -o cat | sed 's/^/  | /'
  return 1
}
check "data written before the update (device upd-scale, API token) reads back" data_intact
hq_seen() { hq_get /hq/v1/stores | jq -e --arg s "$STORE_ID" '.stores[] | select(.id == $s) | .last_seen // empty'; }
check "HQ has heard from the store" wait_for 30 hq_seen
echo "  HQ set up, store connected: $(since "$T") s"

# store (simulated): stage NAME, then write request.json with JSON, as user storebox, atomically
store_stage() {
  ct install -d -o storebox -g storebox -m 0700 "$UPD" "$STAGED"
  ct install -o storebox -g storebox -m 0640 "/srv/debs/$1" "$STAGED/$1"
  ct install -o storebox -g storebox -m 0640 "/srv/debs/$1.manifest.json" "$STAGED/$1.manifest.json"
}
store_request() {
  ct rm -f "$UPD/result.json" /var/lib/storebox-updater/last-result.json
  ct runuser -u storebox -- sh -c "cat > $UPD/.request.json.tmp && mv $UPD/.request.json.tmp $UPD/request.json" <<<"$1"
}
install_request() {   # install_request NAME VERSION SERIAL PROBATION
  store_stage "$1"
  store_request "{\"action\":\"install\",\"version\":\"$2\",\"serial\":$3,\"rollout\":\"install-test\",\"package\":\"$STAGED/$1\",\"manifest\":\"$STAGED/$1.manifest.json\",\"probation_seconds\":$4,\"requested_at\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}"
}
# The helper's result: its root-only copy (the store process reads and removes result.json).
LAST_RESULT=/var/lib/storebox-updater/last-result.json
has_result() { ct test -s "$LAST_RESULT"; }
result_field() { ct cat "$LAST_RESULT" | jq -r ".$1"; }
show_result() { echo "  result: $(ct cat "$LAST_RESULT" 2>/dev/null | tr -d '\n' | tr -s ' ')"; }
installed() { ct dpkg-query -W -f='${Version} ${Status}' storebox; }

# 1. No way back: the running version's package is nowhere on the box (installed from a file,
#    not from an apt repository) -> refused, nothing touched.
PID_BEFORE=$(unit_prop MainPID)
install_request u-next.deb "$NEXT_VERSION" "$S_UNEXT" 10
check "store (simulated) request without the running version's package: the helper answers" wait_for 60 has_result
show_result
check "... refused (outcome failed, 'no way back'), $CUR_VERSION untouched and still running (same PID)" test \
  "$(result_field outcome)|$(result_field reason | grep -o 'no way back')|$(installed)|$(unit_prop MainPID)" = \
  "failed|no way back|$CUR_VERSION install ok installed|$PID_BEFORE"
check "request.json consumed; result.json for the store owned by storebox (unless the store already took it)" test \
  "$(ct sh -c "test -e $UPD/request.json && echo left"; ct sh -c "test -e $UPD/result.json && stat -c %U $UPD/result.json || echo storebox")" = "storebox"
ct rm -rf "$STAGED"
# apt keeps what it downloads from a repository in its archives; the test puts the running
# version's package there as a repository install would have.
ct install -m 0644 /srv/debs/current.deb "/var/cache/apt/archives/storebox_${CUR_VERSION}_amd64.deb"

# HQ: upload NAME (prints the body, then the HTTP status on a line of its own); start a rollout
hq_upload() {
  ctnet curl -sS --max-time 60 -H "Authorization: Bearer $HQ_ADMIN" -F "package=@$DEBDIR/$1" \
    -F "manifest=@$DEBDIR/$1.manifest.json" -w '\n%{http_code}' "http://$HQ_HTTP/hq/v1/releases"
}
hq_rollout() {   # hq_rollout VERSION: an urgent rollout to all stores; prints the rollout's id
  local out
  out=$(ctnet curl -sS --max-time 30 -H "Authorization: Bearer $HQ_ADMIN" -H 'content-type: application/json' \
    -d "{\"version\":\"$1\",\"waves\":[{\"all\":true,\"min_success_percent\":100,\"soak_minutes\":0}],\"abort_failure_percent\":0,\"store_timeout_minutes\":10,\"urgent\":true}" \
    "http://$HQ_HTTP/hq/v1/rollouts")
  jq -r '.id // empty' <<<"$out" 2>/dev/null | grep . || { echo "  rollout refused: $out" >&2; return 1; }
}
# "<rollout state> <the store's state in it>"
rollout_state() { hq_get "/hq/v1/rollouts/$1" | jq -r --arg s "$STORE_ID" '.state + " " + ([.waves[].stores[] | select(.store == $s) | .state][0] // "none")'; }
rollout_is() { test "$(rollout_state "$1")" = "$2"; }
# The release.status states HQ received from the store for a rollout, in order.
hq_reports() {
  hq_get "/hq/v1/store-events?store=$STORE_ID&type=release.status&limit=1000" |
    jq -r --arg r "$1" '[.events[].payload | select(.rollout == $r) | .state] | join(" ")'
}

# 2. N+1 published at HQ and rolled out (urgent, one wave of all stores): the store downloads,
#    verifies, stages, asks the helper, which installs; the store's probation commits.
T=$(now)
OUT=$(hq_upload h-next.deb)
check "release engineer uploads $NEXT_VERSION to HQ (201)" test "$(tail -1 <<<"$OUT")" = 201
R_NEXT=$(hq_rollout "$NEXT_VERSION")
check "... and starts an urgent rollout of it to all stores" test -n "$R_NEXT"
dpkg_says() { test "$(installed)" = "$1 install ok installed"; }
check "HQ → store → helper: dpkg says $NEXT_VERSION" wait_for 180 dpkg_says "$NEXT_VERSION"
echo "  from upload to $NEXT_VERSION installed: $(since "$T") s"
check "HQ's rollout of $NEXT_VERSION: completed, the store committed" wait_for 120 rollout_is "$R_NEXT" "completed committed"
echo "  from upload to HQ's rollout completed: $(since "$T") s"
echo "  the store reported to HQ: $(hq_reports "$R_NEXT")"
check "... HQ received downloading, staged, installing, probation, committed" \
  test "$(hq_reports "$R_NEXT")" = "downloading staged installing probation committed"
check "... the rollout counts 1 succeeded, 0 failed" \
  test "$(hq_get "/hq/v1/rollouts/$R_NEXT" | jq -c '[.counts.succeeded, .counts.failed]')" = "[1,0]"
check "the store says committed, running $NEXT_VERSION (/api/v1/updates)" \
  test "$(store_updates '.state + " " + .running_version')" = "committed $NEXT_VERSION"
check "$NEXT_VERSION is running: active, enabled, /healthz" wait_for 30 service_ok
check "... the API reports $NEXT_VERSION" test "$(api_version)" = "$NEXT_VERSION"
check "after $NEXT_VERSION: data intact" data_intact
check "the helper kept both packages and a database backup (root-only)" ct sh -c \
  "test -s /var/lib/storebox-updater/packages/storebox_${CUR_VERSION}_amd64.deb && test -s /var/lib/storebox-updater/packages/storebox_${NEXT_VERSION}_amd64.deb && ls /var/lib/storebox-updater/backups/*/storebox.db >/dev/null && test \"\$(stat -c '%U %a' /var/lib/storebox-updater)\" = 'root 700'"

# 3. The bad version through HQ: its serve fails at once; the helper rolls back by itself, the
#    store reports rolled_back, HQ aborts the rollout (abort_failure_percent 0).
T=$(now)
OUT=$(hq_upload h-bad.deb)
check "release engineer uploads the bad $BAD_VERSION to HQ (201)" test "$(tail -1 <<<"$OUT")" = 201
R_BAD=$(hq_rollout "$BAD_VERSION")
check "... and starts an urgent rollout of it" test -n "$R_BAD"
check "HQ's rollout of $BAD_VERSION is aborted, the store rolled_back" wait_for 240 rollout_is "$R_BAD" "aborted rolled_back"
echo "  from upload to HQ's rollout aborted with the store rolled back: $(since "$T") s"
echo "  rollout: $(hq_get "/hq/v1/rollouts/$R_BAD" | jq -c '{state, reason, counts}')"
echo "  the store reported to HQ: $(hq_reports "$R_BAD")"
echo "  helper: $(ct cat "$LAST_RESULT" 2>/dev/null | jq -c '{outcome, reason}')"
check "... dpkg says $NEXT_VERSION (the helper's result: rolled_back)" test \
  "$(result_field outcome) $(installed)" = "rolled_back $NEXT_VERSION install ok installed"
check "the store says rolled_back for $BAD_VERSION, running $NEXT_VERSION" \
  test "$(store_updates '.state + " " + .running_version')" = "rolled_back $NEXT_VERSION"
check "after the rollback: $NEXT_VERSION running" wait_for 30 service_ok
check "... the API reports $NEXT_VERSION" test "$(api_version)" = "$NEXT_VERSION"
check "after the rollback: data intact" data_intact

# 4. A tampered package (one byte flipped after signing, manifest valid) uploaded to HQ: refused,
#    naming the check; nothing assigned, nothing touched.
PID_BEFORE=$(unit_prop MainPID)
N_RELEASES=$(hq_get /hq/v1/releases | jq '.releases | length')
OUT=$(hq_upload h-tampered.deb)
echo "  HQ: $(tr '\n' ' ' <<<"$OUT")"
check "HQ refuses the tampered package: 400 invalid_release, check sha256" test \
  "$(tail -1 <<<"$OUT")|$(grep -o 'invalid_release' <<<"$OUT" | head -1)|$(grep -o 'check `sha256` failed' <<<"$OUT")" = \
  "400|invalid_release|check \`sha256\` failed"
check "... HQ registered nothing ($N_RELEASES releases)" test "$(hq_get /hq/v1/releases | jq '.releases | length')" = "$N_RELEASES"
check "... $NEXT_VERSION keeps running (same PID, API)" test \
  "$(installed)|$(unit_prop MainPID)|$(api_version)" = "$NEXT_VERSION install ok installed|$PID_BEFORE|$NEXT_VERSION"
# HQ's part ends here: the steps below write the store's requests themselves, and a store that
# follows HQ's feed would take part in them.
ct systemctl stop storebox-hq

# 5. The helper on its own. A serial it has seen (N+1's, below the bad one's) is refused.
install_request h-next.deb "$NEXT_VERSION" "$S_NEXT" 10
check "store (simulated) requests $NEXT_VERSION with a serial already used: the helper answers" wait_for 60 has_result
check "... refused naming the serial check" test \
  "$(result_field outcome)|$(result_field reason | grep -o 'check `serial` failed')" = "failed|check \`serial\` failed"
# The tampered package handed straight to the helper: refused before anything is touched.
install_request h-tampered.deb "$BAD_VERSION" "$S_TAMPERED" 10
check "store (simulated) requests the tampered package: the helper answers" wait_for 60 has_result
show_result
check "the helper refuses it too (check sha256), $NEXT_VERSION keeps running (same PID)" test \
  "$(result_field outcome)|$(result_field reason | grep -o 'check `sha256` failed')|$(installed)|$(unit_prop MainPID)" = \
  "failed|check \`sha256\` failed|$NEXT_VERSION install ok installed|$PID_BEFORE"

# 6. Power loss mid-install: a test hook (a runtime drop-in, gone at the next boot) stalls the
#    helper after `dpkg --unpack`; the container is then killed outright (SIGKILL to its PID 1)
#    and booted again. The helper's journal is still there, so the path unit starts it at boot,
#    which finds its journal: dpkg --configure -a, then back to the kept package and backup.
ct mkdir -p /run/systemd/system/storebox-updater.service.d
ct sh -c 'printf "[Service]\nEnvironment=STOREBOX_UPDATER_TEST_HOOK=stall-after-unpack\n" > /run/systemd/system/storebox-updater.service.d/test-hook.conf'
ct systemctl daemon-reload
install_request u-powerloss.deb "$BAD_VERSION" "$S_POWER" 10
half_installed() { ct grep -q '"phase": "installing"' /var/lib/storebox-updater/journal.json && ct journalctl -u storebox-updater --no-pager | grep -q 'test hook: stalling'; }
check "power loss: the helper is mid-install ($BAD_VERSION unpacked, not configured)" wait_for 120 half_installed
echo "  dpkg state at the power loss: $(installed)"
T=$(now); kill -KILL "$LEADER"; wait "$NSPID" 2>/dev/null; NSPID=; LEADER=
boot_ct; echo "  killed and booted again in $(since "$T") s"
check "after the power loss: the helper repaired at boot" wait_for 240 has_result
echo "  repaired $(since "$T") s after the power loss"; show_result
check "... outcome rolled_back, naming the interruption; dpkg says $NEXT_VERSION installed" test \
  "$(result_field outcome)|$(result_field reason | grep -o 'interrupted')|$(installed)" = \
  "rolled_back|interrupted|$NEXT_VERSION install ok installed"
check "... journal and request gone" ct sh -c "! test -e /var/lib/storebox-updater/journal.json && ! test -e $UPD/request.json"
check "after the power loss: $NEXT_VERSION running" wait_for 30 service_ok
check "... the API reports $NEXT_VERSION" test "$(api_version)" = "$NEXT_VERSION"
check "after the power loss: data intact" data_intact
# 7. The store's own probation failed after a committed install: it asks for a rollback of
#    $NEXT_VERSION; the helper restores the version before its last install and that backup.
T=$(now)
store_request "{\"action\":\"rollback\",\"version\":\"$NEXT_VERSION\",\"reason\":\"store probation: HQ unreachable (install test)\",\"requested_at\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}"
check "store (simulated) asks to roll back $NEXT_VERSION: the helper finishes" wait_for 180 has_result
echo "  rollback request took $(since "$T") s"; show_result
check "... rolled back to $CUR_VERSION (result rolled_back; dpkg says $CUR_VERSION)" test \
  "$(result_field action) $(result_field outcome) $(installed)" = "rollback rolled_back $CUR_VERSION install ok installed"
check "after the requested rollback: $CUR_VERSION running" wait_for 30 service_ok
check "... the API reports ${CUR_VERSION%-*}" test "$(api_version)" = "${CUR_VERSION%-*}"
check "after the requested rollback: data intact" data_intact
# The restored database goes on numbering its events for HQ after those the replaced one handed
# out (HQ keeps one event per store and seq): the helper recorded that mark with the backup.
outbox_mark() { ct sh -c "test \"\$(cat /var/lib/storebox-updater/backups/*-before-$NEXT_VERSION/outbox-seq)\" -gt 0"; }
check "... the restore carried the outbox's numbering over (outbox-seq kept with the backup)" outbox_mark
echo "  helper journal (last 8 lines):"; ct journalctl -u storebox-updater --no-pager -n 8 -o cat | sed 's/^/  | /'
UPD_S=$(( $(date +%s) - UPD_T0 ))
echo "  self-update phase: $UPD_S s"
check "self-update phase within ${UPD_BUDGET} s" test "$UPD_S" -le "$UPD_BUDGET"

apt_ct purge storebox > "$WORK/apt-purge2.log" 2>&1; RC=$?
check "purge after the upgrade (the update helper's packages and backups too)" test "$RC $(ct sh -c 'test -e /var/lib/storebox -o -e /var/lib/storebox-updater && echo data-left')" = "0 "

# ---------------------------------------------------------------------------------------------
echo
if [ $FAILED -gt 0 ]; then
  echo "failed checks:"; printf '  - %s\n' "${FAILED_NAMES[@]}"
  echo "-- journal of storebox (last 40 lines):"
  ct journalctl -u storebox --no-pager -n 40 2>/dev/null | sed 's/^/  /' || true
fi
T=$(now); stop_ct; echo "container powered off in $(since "$T") s"
if [ "${KEEP:-0}" != 1 ]; then T=$(now); rm -rf "$WORK"; echo "container removed in $(since "$T") s"; fi
echo "install test took $(since "$T_START") s"
echo "$PASSED passed, $FAILED failed"
[ $FAILED = 0 ]
