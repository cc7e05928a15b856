# shellcheck shell=bash
# Settings, folders, logging, the lock and process helpers.
# Sourced by deploy/local/services.sh; every other lib/ file relies on what this one defines.

KAFKA_VERSION=4.1.1 # keep in sync with deploy/local/kafka/pom.xml

POM="$SCRIPT_DIR/kafka/pom.xml"
PROBE="$SCRIPT_DIR/kafka_probe.py"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1000))}"
REDIS_PORT="${REDIS_PORT:-6379}"
SERVICES_DIR="${SERVICES_DIR:-$REPO_ROOT/.services}"
SERVICES_TIMEOUT="${SERVICES_TIMEOUT:-60}"
STOP_TIMEOUT="${STOP_TIMEOUT:-30}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
WITH_PROMETHEUS="${WITH_PROMETHEUS:-0}"
PYTHON="${PYTHON:-python3}"
if [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
  JAVA="${JAVA_HOME}/bin/java"
else
  JAVA="${JAVA:-java}"
fi

LIB_DIR="${KAFKA_LIB_DIR:-$SERVICES_DIR/lib}"
CONF_DIR="$SERVICES_DIR/conf"
DATA_DIR="$SERVICES_DIR/data"
LOG_DIR="$SERVICES_DIR/logs"
RUN_DIR="$SERVICES_DIR/run"
KAFKA_DATA="$DATA_DIR/kafka"
REDIS_DATA="$DATA_DIR/redis"
KAFKA_PID="$RUN_DIR/kafka.pid"
REDIS_PID="$RUN_DIR/redis.pid"
KAFKA_CONF="$CONF_DIR/server.properties"
REDIS_CONF="$CONF_DIR/redis.conf"

log() { printf 'services: %s\n' "$*"; }
err() { printf 'services: ERROR: %s\n' "$*" >&2; }
die() {
  err "$*"
  exit 1
}


prepare_dirs() {
  mkdir -p "$CONF_DIR" "$KAFKA_DATA" "$REDIS_DATA" "$LOG_DIR" "$RUN_DIR"
  # Ignore the whole folder from inside, so it never shows in `git status` even
  # if the repo's .gitignore does not list it (or SERVICES_DIR points elsewhere).
  [[ -f "$SERVICES_DIR/.gitignore" ]] || printf '*\n' >"$SERVICES_DIR/.gitignore"
}

# Serialise concurrent invocations (e.g. two test sessions calling `up` at once).
# The daemons must be started with `9>&-` (and 8, the jar-cache lock): an inherited fd would keep a lock
# held for as long as they live.
take_lock() {
  mkdir -p "$SERVICES_DIR"
  exec 9>"$SERVICES_DIR/.lock"
  if command -v flock >/dev/null 2>&1; then
    flock -w 180 9 || die "another services.sh holds $SERVICES_DIR/.lock for over 180 s"
  fi
}

is_root() { [[ "$(id -u)" == 0 ]]; }

# kill -0 also succeeds for a zombie (a child that died but was not reaped yet,
# e.g. a broker that crashed during startup), so look at the process state too.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

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

stop_pid() { # stop_pid NAME PID [SIGNAL]
  local name="$1" pid="$2" sig="${3:-TERM}" waited=0
  kill -s "$sig" "$pid" 2>/dev/null || return 0
  while alive "$pid"; do
    if ((waited >= STOP_TIMEOUT * 10)); then
      log "$name (pid $pid) still alive after ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -s KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
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
