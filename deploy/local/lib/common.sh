# shellcheck shell=bash
# Settings, the shape's folders and ports, logging, the lock and process helpers.
# Sourced by deploy/local/services.sh; every other lib/ file relies on what this one defines.

KAFKA_VERSION=4.1.1 # keep in sync with deploy/local/kafka/pom.xml

POM="$SCRIPT_DIR/kafka/pom.xml"
PROBE="$SCRIPT_DIR/kafka_probe.py"

log() { printf 'services: %s\n' "$*"; }
err() { printf 'services: ERROR: %s\n' "$*" >&2; }
die() {
  err "$*"
  exit 1
}

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

# ---------------------------------------------------------------------------
# shape: which services, how many of each, secured or not
# ---------------------------------------------------------------------------

KAFKA_BROKERS="${KAFKA_BROKERS:-1}"
SECURE="${SECURE:-0}"
REDIS_HA="${REDIS_HA:-0}"
REDIS_SENTINELS="${REDIS_SENTINELS:-1}"
[[ "$KAFKA_BROKERS" == 1 || "$KAFKA_BROKERS" == 3 ]] || die "KAFKA_BROKERS must be 1 or 3 (got '$KAFKA_BROKERS')"
[[ "$SECURE" == 0 || "$SECURE" == 1 ]] || die "SECURE must be 0 or 1 (got '$SECURE')"
[[ "$REDIS_HA" == 0 || "$REDIS_HA" == 1 ]] || die "REDIS_HA must be 0 or 1 (got '$REDIS_HA')"
[[ "$REDIS_SENTINELS" == 1 || "$REDIS_SENTINELS" == 3 ]] || die "REDIS_SENTINELS must be 1 or 3 (got '$REDIS_SENTINELS')"

# The folder name of a shape: its parts joined, e.g. "secure-cluster". The plain
# single-node shape has no name: it lives directly in SERVICES_DIR, where its
# data has always been.
shape_name() { # shape_name SECURE BROKERS REDIS_HA
  local parts=()
  [[ "$1" == 1 ]] && parts+=(secure)
  [[ "$2" != 1 ]] && parts+=(cluster)
  [[ "$3" == 1 ]] && parts+=(redis-ha)
  local IFS=-
  printf '%s\n' "${parts[*]}"
}

SERVICES_DIR="${SERVICES_DIR:-$REPO_ROOT/.services}"
SHAPE="$(shape_name "$SECURE" "$KAFKA_BROKERS" "$REDIS_HA")"
SHAPE_DIR="$SERVICES_DIR${SHAPE:+/$SHAPE}"

if [[ "$SECURE" == 1 ]]; then
  # Beside the plaintext pair on the default ports, not on top of it.
  KAFKA_PORT="${KAFKA_PORT:-9093}"
  REDIS_PORT="${REDIS_PORT:-6380}"
else
  KAFKA_PORT="${KAFKA_PORT:-9092}"
  REDIS_PORT="${REDIS_PORT:-6379}"
fi
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1000))}"
REDIS_SENTINEL_PORT="${REDIS_SENTINEL_PORT:-$((REDIS_PORT + 20000))}"
for _var in KAFKA_PORT KAFKA_CONTROLLER_PORT REDIS_PORT REDIS_SENTINEL_PORT; do
  if ! is_uint "${!_var}" || ((${!_var} == 0 || ${!_var} + 2 > 65535)); then
    die "$_var must be a TCP port (got '${!_var}')"
  fi
done
unset _var

# Three JVMs starting at once on a small machine take several times as long as one.
SERVICES_TIMEOUT="${SERVICES_TIMEOUT:-$((KAFKA_BROKERS == 1 ? 60 : 180))}"
STOP_TIMEOUT="${STOP_TIMEOUT:-30}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
WITH_PROMETHEUS="${WITH_PROMETHEUS:-0}"
PYTHON="${PYTHON:-python3}"
if [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
  JAVA="${JAVA_HOME}/bin/java"
else
  JAVA="${JAVA:-java}"
fi

# Shared by every shape: the jars are the same.
LIB_DIR="${KAFKA_LIB_DIR:-$SERVICES_DIR/lib}"
CONF_DIR="$SHAPE_DIR/conf"
DATA_DIR="$SHAPE_DIR/data"
LOG_DIR="$SHAPE_DIR/logs"
RUN_DIR="$SHAPE_DIR/run"
TLS_DIR="$SHAPE_DIR/tls"
SECRETS_DIR="$SHAPE_DIR/secrets"

prepare_dirs() {
  mkdir -p "$CONF_DIR" "$DATA_DIR" "$LOG_DIR" "$RUN_DIR"
  # Ignore the whole folder from inside, so it never shows in `git status` even
  # if the repo's .gitignore does not list it (or SERVICES_DIR points elsewhere).
  [[ -f "$SERVICES_DIR/.gitignore" ]] || printf '*\n' >"$SERVICES_DIR/.gitignore"
}

# Serialise concurrent invocations (e.g. two test sessions calling `up` at once),
# across all shapes of one SERVICES_DIR. The daemons must be started with `9>&-`
# (and 8, the jar-cache lock): an inherited fd would keep a lock held for as
# long as they live.
take_lock() {
  mkdir -p "$SERVICES_DIR"
  exec 9>"$SERVICES_DIR/.lock"
  if command -v flock >/dev/null 2>&1; then
    flock -w 180 9 || die "another services.sh holds $SERVICES_DIR/.lock for over 180 s"
  fi
}

is_root() { [[ "$(id -u)" == 0 ]]; }

# ---------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------

proc_state() { awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true; }

# kill -0 also succeeds for a zombie (a child that died but was not reaped yet,
# e.g. a broker that crashed during startup), so look at the process state too.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ "$(proc_state "$1")" != Z ]]
}

# SIGSTOP'd (kafka-freeze, redis-freeze): alive, holding its ports, answering nothing.
frozen() { [[ "$(proc_state "$1")" == T ]]; }

# pid from a pid file if that process is alive and its command line contains $2
# (guards against a recycled pid belonging to some unrelated process).
live_pid() {
  local file="$1" needle="$2" pid
  [[ -s "$file" ]] || return 1
  pid="$(tr -dc '0-9' <"$file")"
  [[ -n "$pid" ]] && alive "$pid" || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$needle" || return 1
  fi
  printf '%s\n' "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# stop_pids SIGNAL NAME=PID...: signal them all at once, then wait for all.
# Processes that outlive STOP_TIMEOUT get SIGKILL. Stopping the nodes of a
# cluster together matters: one by one, the last broker's controlled shutdown
# waits for a controller quorum that is already gone.
stop_pids() {
  local sig="$1" entry waited=0 left
  shift
  for entry in "$@"; do
    kill -s "$sig" "${entry#*=}" 2>/dev/null || true
    # A frozen process acts on SIGTERM only once it runs again.
    [[ "$sig" == KILL ]] || kill -s CONT "${entry#*=}" 2>/dev/null || true
  done
  while :; do
    left=()
    for entry in "$@"; do
      alive "${entry#*=}" && left+=("$entry")
    done
    ((${#left[@]} == 0)) && return 0
    if ((waited >= STOP_TIMEOUT * 10)); then
      for entry in "${left[@]}"; do
        log "${entry%%=*} (pid ${entry#*=}) still alive after ${STOP_TIMEOUT}s; sending SIGKILL"
        kill -s KILL "${entry#*=}" 2>/dev/null || true
      done
      sleep 0.5
      return 0
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

tail_log() {
  local f
  for f in "$@"; do
    [[ -s "$f" ]] || continue
    printf -- '----- last lines of %s -----\n' "$f" >&2
    tail -n 40 "$f" >&2
  done
}
