#!/usr/bin/env bash
# Local, Docker-free Apache Kafka (KRaft, single node) + Redis for dev, tests and CI.
#
# Usage: deploy/local/services.sh COMMAND
#   install        idempotent: redis-server via apt (root only), checks java>=17, mvn,
#                  python3, fetches the Kafka jars from Maven Central into $SERVICES_DIR/lib
#                  (WITH_PROMETHEUS=1 also apt-installs Debian's prometheus + promtool)
#   up             install, then start Kafka and Redis and wait until both answer
#   down           stop what `up` started (SIGTERM, up to 30 s, then SIGKILL); keeps data
#   status         one line per service; exit 0 only if both answer
#   clean          down, then delete data, logs and generated config (keeps the jar cache)
#   kafka-start | kafka-stop | kafka-restart | kafka-kill
#   redis-start | redis-stop | redis-restart | redis-kill
#                  one service only, data kept (for fault-injection tests);
#                  *-kill sends SIGKILL (a crash) instead of a graceful stop
#
# Environment:
#   KAFKA_PORT             broker (PLAINTEXT) port on 127.0.0.1          default 9092
#   KAFKA_CONTROLLER_PORT  KRaft controller port on 127.0.0.1            default KAFKA_PORT+1000
#   REDIS_PORT             Redis port on 127.0.0.1                       default 6379
#   SERVICES_DIR           state folder (self-git-ignored)               default <repo>/.services
#   SERVICES_TIMEOUT       seconds to wait for readiness                 default 60
#   STOP_TIMEOUT           seconds between SIGTERM and SIGKILL           default 30
#   KAFKA_HEAP_OPTS        broker JVM heap                               default -Xmx512m -Xms256m
#   KAFKA_LIB_DIR          Kafka jar cache; point several clones or     default $SERVICES_DIR/lib
#                          SERVICES_DIRs at one folder to fetch once
#   KAFKA_EXTRA_CONFIG     extra server.properties lines (newline-separated), appended last
#   WITH_PROMETHEUS=1      `install` also installs Debian's prometheus package
#
# Layout of $SERVICES_DIR:
#   lib/                 Kafka jars (+ .stamp: version and pom hash; refetched when either changes)
#   conf/                generated server.properties, log4j2*.properties, redis.conf
#   data/kafka/          KRaft metadata + topic data (formatted once)
#   data/redis/          Redis AOF (appendonlydir/)
#   logs/kafka.log       broker log (log4j2, INFO);  logs/kafka.out: JVM stdout/stderr
#   logs/redis.log       Redis log;  logs/maven.log: last jar fetch
#   run/kafka.pid, run/redis.pid
#
# One instance per SERVICES_DIR: to run a second pair in parallel, give it its own
# SERVICES_DIR and ports.
set -euo pipefail

KAFKA_VERSION=4.1.1 # keep in sync with deploy/local/kafka/pom.xml

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
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

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

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

kafka_live_pid() { live_pid "$KAFKA_PID" "$KAFKA_CONF"; }
redis_live_pid() { live_pid "$REDIS_PID" "redis-server"; }

# 0: a ready Kafka broker; 1: nothing listening; 2: something else / not ready.
kafka_probe() {
  local rc=0
  "$PYTHON" "$PROBE" "$KAFKA_PORT" 127.0.0.1 >/dev/null 2>&1 || rc=$?
  return "$rc"
}

# Prints Redis' answer to PING ("PONG", "NOAUTH ...", ...) or nothing.
redis_ping() {
  timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | head -n1 || true
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

# ---------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------

java_major() {
  local v
  v="$("$JAVA" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n1)"
  v="${v#1.}" # 1.8.0 -> 8.0
  printf '%s\n' "${v%%[.+-]*}"
}

apt_install() { # apt_install PKG...
  is_root || die "$* not installed and not root: run 'sudo apt-get install -y $*' (or this script as root)"
  log "installing $* with apt-get"
  local apt_log="$LOG_DIR/apt.log"
  if [[ -z "${APT_UPDATED:-}" ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$apt_log" 2>&1 || {
      tail_log "$apt_log"
      die "apt-get update failed (log: $apt_log)"
    }
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"$apt_log" 2>&1 || {
    tail_log "$apt_log"
    die "apt-get install $* failed (log: $apt_log)"
  }
}

# Debian starts the packaged daemon after install on machines with an init
# system (not in containers, where policy-rc.d forbids it). That daemon would
# squat on the port with Debian's config (no AOF, default eviction), so stop it.
stop_distro_service() {
  local svc="$1"
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    log "stopping and disabling the distro's $svc service (this script runs its own)"
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
}

cmd_install() {
  prepare_dirs
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    apt_install redis-server
    stop_distro_service redis-server
  fi
  if [[ "$WITH_PROMETHEUS" == 1 ]] && { ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; }; then
    apt_install prometheus
    stop_distro_service prometheus
  fi

  local missing=() major
  if ! command -v "$JAVA" >/dev/null 2>&1; then
    missing+=("java>=17 (apt-get install openjdk-17-jre-headless)")
  else
    major="$(java_major)"
    if ! [[ "$major" =~ ^[0-9]+$ ]] || ((major < 17)); then
      missing+=("java>=17 (found '$("$JAVA" -version 2>&1 | head -n1)'; Kafka 4.x brokers need 17+)")
    fi
  fi
  command -v mvn >/dev/null 2>&1 || missing+=("mvn (apt-get install maven)")
  command -v "$PYTHON" >/dev/null 2>&1 || missing+=("python3 (readiness probe)")
  if ((${#missing[@]} > 0)); then
    local IFS=';'
    die "missing: ${missing[*]}"
  fi

  fetch_kafka_jars
}

fetch_kafka_jars() {
  local stamp want
  stamp="$LIB_DIR/.stamp"
  want="kafka_2.13=$KAFKA_VERSION pom=$(sha256sum "$POM" | cut -c1-16)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  # KAFKA_LIB_DIR may be shared by several instances: fetch under a lock of its
  # own and look at the stamp again once we hold it.
  mkdir -p "$(dirname "$LIB_DIR")"
  exec 8>"$LIB_DIR.lock"
  command -v flock >/dev/null 2>&1 && { flock -w 600 8 || die "timed out waiting for $LIB_DIR.lock"; }
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exec 8>&-
    return 0
  fi
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIB_DIR (one-off)"
  local tmp="$LIB_DIR.tmp.$$"
  rm -rf "$tmp"
  # runtime scope: the broker needs kafka_2.13's runtime-scoped deps
  # (kafka-server, kafka-storage, kafka-raft, coordinators...), not test ones.
  if ! mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp" >"$LOG_DIR/maven.log" 2>&1; then
    rm -rf "$tmp"
    tail_log "$LOG_DIR/maven.log"
    die "Maven could not fetch the Kafka jars (log: $LOG_DIR/maven.log)"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing after fetch; pom.xml and KAFKA_VERSION disagree?"
  rm -rf "$LIB_DIR"
  mv "$tmp" "$LIB_DIR"
  printf '%s\n' "$want" >"$stamp"
  exec 8>&-
}

# ---------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------

write_kafka_conf() {
  cat >"$KAFKA_CONF" <<EOF
# Generated by deploy/local/services.sh on every start; edits are overwritten.
# Single-node KRaft "combined" mode: this one JVM is both broker and controller.
process.roles=broker,controller
node.id=1
# Static quorum (not --standalone / dynamic): the voter's endpoint is read from
# here on every start instead of being frozen into the metadata log at format
# time, so changing KAFKA_CONTROLLER_PORT later still works with existing data.
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA

# There is one broker. The defaults (RF 3, min ISR 2) for the internal topics
# can never be met, so consumer-group offset commits (__consumer_offsets) and
# transactions (__transaction_state) would fail or hang. Same for share groups.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
# Fewer internal partitions than the default 50: creating them is the first
# FindCoordinator's cost; 10 is plenty for one machine.
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10

# Tests and demos join groups constantly: don't wait 3 s for more members.
group.initial.rebalance.delay.ms=0
# Producers may create topics on first use; 3 partitions (not 1) so that
# partition assignment / rebalancing / per-key ordering get exercised locally.
auto.create.topics.enable=true
num.partitions=3

# broker.session.timeout.ms stays at its default (9 s): after a SIGKILL
# (kafka-kill) the restarted broker cannot re-register until the old session
# expires, so that restart takes ~15 s instead of ~7 s. Lowering it risks the
# only broker being fenced during a GC/CPU stall on a busy 2-core CI box.
EOF
  if [[ -n "${KAFKA_EXTRA_CONFIG:-}" ]]; then
    printf '\n# From KAFKA_EXTRA_CONFIG (later keys override earlier ones):\n%s\n' "$KAFKA_EXTRA_CONFIG" >>"$KAFKA_CONF"
  fi

  # Broker log to a file at INFO; the chattiest loggers at WARN.
  cat >"$CONF_DIR/log4j2.properties" <<'EOF'
status = warn
name = kafka-local
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/kafka.log
appender.file.filePattern = ${sys:kafka.logs.dir}/kafka.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
EOF

  # Short-lived tools (storage format): warnings to stderr only.
  cat >"$CONF_DIR/log4j2-tools.properties" <<'EOF'
status = warn
name = kafka-tools
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
}

# Kafka's Uuid string form: 16 random bytes, URL-safe base64, no padding; one
# starting with '-' is rejected (it looks like a CLI flag). Avoids a JVM start.
random_cluster_id() {
  local id
  while :; do
    id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$id" != -* ]] && break
  done
  printf '%s\n' "$id"
}

format_kafka_storage() {
  # meta.properties is written by a successful format; with it present the
  # data dir is kept as is (topics and offsets survive down/up).
  [[ -f "$KAFKA_DATA/meta.properties" ]] && return 0
  local cid
  cid="$(random_cluster_id)"
  log "formatting Kafka storage in $KAFKA_DATA (cluster id $cid)"
  # A short-lived JVM: C1 only and the serial GC start faster.
  if ! "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Dlog4j2.configurationFile="$CONF_DIR/log4j2-tools.properties" \
    -cp "$LIB_DIR/*" kafka.tools.StorageTool format \
    --cluster-id "$cid" --config "$KAFKA_CONF" --ignore-formatted >"$LOG_DIR/kafka-format.log" 2>&1; then
    tail_log "$LOG_DIR/kafka-format.log"
    die "Kafka storage format failed (log: $LOG_DIR/kafka-format.log)"
  fi
}

wait_kafka() { # wait_kafka PID
  local pid="$1" deadline=$((SECONDS + SERVICES_TIMEOUT))
  while ((SECONDS < deadline)); do
    if kafka_probe; then
      return 0
    fi
    if ! alive "$pid"; then
      tail_log "$LOG_DIR/kafka.out" "$LOG_DIR/kafka.log"
      err "Kafka (pid $pid) exited during startup; logs: $LOG_DIR/kafka.log, $LOG_DIR/kafka.out"
      rm -f "$KAFKA_PID"
      return 1
    fi
    sleep 0.3
  done
  tail_log "$LOG_DIR/kafka.out" "$LOG_DIR/kafka.log"
  err "Kafka did not answer on 127.0.0.1:$KAFKA_PORT within ${SERVICES_TIMEOUT}s; stopping it (logs: $LOG_DIR/kafka.log)"
  stop_pid kafka "$pid"
  rm -f "$KAFKA_PID"
  return 1
}

kafka_start() {
  local pid rc=0
  if pid="$(kafka_live_pid)"; then
    if kafka_probe; then
      log "kafka: already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
      return 0
    fi
    log "kafka: process $pid exists but is not answering yet; waiting"
    wait_kafka "$pid" && log "kafka: up on 127.0.0.1:$KAFKA_PORT (pid $pid)"
    return
  fi
  rm -f "$KAFKA_PID"
  kafka_probe || rc=$?
  if ((rc == 0)); then
    log "kafka: 127.0.0.1:$KAFKA_PORT is already served by a Kafka broker NOT started by this script (no pid file in $RUN_DIR); reusing it as is, 'down' will not stop it"
    return 0
  elif ((rc == 2)); then
    die "kafka: port $KAFKA_PORT is taken by something that is not a ready Kafka broker; free it or set KAFKA_PORT"
  fi
  if port_open "$KAFKA_CONTROLLER_PORT"; then
    die "kafka: controller port $KAFKA_CONTROLLER_PORT is taken; free it or set KAFKA_CONTROLLER_PORT"
  fi

  prepare_dirs
  write_kafka_conf
  format_kafka_storage

  local t0=$SECONDS
  log "kafka: starting Kafka $KAFKA_VERSION (KRaft) on 127.0.0.1:$KAFKA_PORT, controller 127.0.0.1:$KAFKA_CONTROLLER_PORT"
  # setsid + nohup: the broker outlives the shell that ran `up` (and its
  # process group, which test runners and CI may kill). Output that escapes
  # log4j (JVM errors, GC warnings) lands in kafka.out.
  # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is a list of JVM flags
  nohup setsid "$JAVA" $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true \
    -Dkafka.logs.dir="$LOG_DIR" \
    -Dlog4j2.configurationFile="$CONF_DIR/log4j2.properties" \
    -cp "$LIB_DIR/*" kafka.Kafka "$KAFKA_CONF" \
    >"$LOG_DIR/kafka.out" 2>&1 </dev/null 8>&- 9>&- &
  pid=$!
  printf '%s\n' "$pid" >"$KAFKA_PID"
  wait_kafka "$pid" || return 1
  log "kafka: up on 127.0.0.1:$KAFKA_PORT (pid $pid, $((SECONDS - t0))s)"
}

kafka_stop() { # kafka_stop [SIGNAL]
  local pid
  if pid="$(kafka_live_pid)"; then
    log "kafka: stopping pid $pid${1:+ with SIG$1}"
    stop_pid kafka "$pid" "${1:-TERM}"
    log "kafka: stopped"
  else
    log "kafka: not running (no live pid in $KAFKA_PID)"
  fi
  rm -f "$KAFKA_PID"
}

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------

write_redis_conf() {
  cat >"$REDIS_CONF" <<EOF
# Generated by deploy/local/services.sh on every start; edits are overwritten.
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize yes
pidfile $REDIS_PID
logfile $LOG_DIR/redis.log
loglevel notice
dir $REDIS_DATA
# Durability like production: the AOF, fsynced every second (at most ~1 s of
# writes lost on a crash). No RDB snapshots: the AOF is the single source.
appendonly yes
appendfsync everysec
save ""
# Attribution state must never be silently evicted: when full, writes fail
# loudly (OOM error) instead of dropping keys.
maxmemory 1gb
maxmemory-policy noeviction
EOF
}

wait_redis() {
  local deadline=$((SECONDS + SERVICES_TIMEOUT))
  while ((SECONDS < deadline)); do
    [[ "$(redis_ping)" == PONG ]] && return 0
    sleep 0.2
  done
  tail_log "$LOG_DIR/redis.log"
  err "Redis did not answer PONG on 127.0.0.1:$REDIS_PORT within ${SERVICES_TIMEOUT}s (log: $LOG_DIR/redis.log)"
  return 1
}

redis_start() {
  local pid answer
  if pid="$(redis_live_pid)"; then
    wait_redis || return 1
    log "redis: already running (pid $pid) on 127.0.0.1:$REDIS_PORT"
    return 0
  fi
  rm -f "$REDIS_PID"
  answer="$(redis_ping)"
  if [[ "$answer" == PONG ]]; then
    log "redis: 127.0.0.1:$REDIS_PORT is already served by a Redis NOT started by this script (no pid file in $RUN_DIR); reusing it as is, 'down' will not stop it"
    local policy
    policy="$(timeout 3 redis-cli -p "$REDIS_PORT" config get maxmemory-policy 2>/dev/null | sed -n 2p || true)"
    [[ -z "$policy" || "$policy" == noeviction ]] || log "redis: WARNING: that server has maxmemory-policy=$policy, not noeviction"
    return 0
  elif [[ -n "$answer" ]] || port_open "$REDIS_PORT"; then
    die "redis: port $REDIS_PORT is taken by something this script cannot use (answer: '${answer:-none}'); free it or set REDIS_PORT"
  fi

  prepare_dirs
  write_redis_conf
  log "redis: starting on 127.0.0.1:$REDIS_PORT"
  # daemonize yes: redis forks, detaches (own session) and writes its pid file.
  if ! redis-server "$REDIS_CONF" >>"$LOG_DIR/redis.log" 2>&1 8>&- 9>&-; then
    tail_log "$LOG_DIR/redis.log"
    die "redis-server failed to start (log: $LOG_DIR/redis.log)"
  fi
  wait_redis || return 1
  log "redis: up on 127.0.0.1:$REDIS_PORT (pid $(cat "$REDIS_PID" 2>/dev/null || echo '?'))"
}

redis_stop() { # redis_stop [SIGNAL]
  local pid
  if pid="$(redis_live_pid)"; then
    # SIGTERM makes Redis flush and fsync the AOF before exiting.
    log "redis: stopping pid $pid${1:+ with SIG$1}"
    stop_pid redis "$pid" "${1:-TERM}"
    log "redis: stopped"
  else
    log "redis: not running (no live pid in $REDIS_PID)"
  fi
  rm -f "$REDIS_PID"
}

# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------

cmd_status() {
  local pid all=0 rc=0
  if pid="$(kafka_live_pid)"; then
    if kafka_probe; then
      log "kafka: running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
    else
      log "kafka: process $pid alive but not answering on 127.0.0.1:$KAFKA_PORT"
      all=1
    fi
  else
    kafka_probe || rc=$?
    case "$rc" in
      0) log "kafka: not started by this script, but a Kafka broker answers on 127.0.0.1:$KAFKA_PORT" ;;
      1) log "kafka: stopped"; all=1 ;;
      *) log "kafka: stopped (port $KAFKA_PORT taken by something else)"; all=1 ;;
    esac
  fi
  if pid="$(redis_live_pid)"; then
    if [[ "$(redis_ping)" == PONG ]]; then
      log "redis: running (pid $pid) on 127.0.0.1:$REDIS_PORT"
    else
      log "redis: process $pid alive but not answering on 127.0.0.1:$REDIS_PORT"
      all=1
    fi
  elif [[ "$(redis_ping)" == PONG ]]; then
    log "redis: not started by this script, but a Redis answers on 127.0.0.1:$REDIS_PORT"
  else
    log "redis: stopped"
    all=1
  fi
  return "$all"
}

cmd_clean() {
  kafka_stop
  redis_stop
  log "deleting $DATA_DIR, $LOG_DIR, $CONF_DIR (jar cache $LIB_DIR kept)"
  rm -rf "$DATA_DIR" "$LOG_DIR" "$CONF_DIR" "$RUN_DIR"
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

main() {
  local cmd="${1:-}"
  case "$cmd" in
    install | up | down | status | clean | kafka-* | redis-*) ;;
    -h | --help | help) usage; return 0 ;;
    *) usage >&2; return 64 ;;
  esac
  case "$cmd" in
    status) cmd_status; return ;;
  esac
  take_lock
  case "$cmd" in
    install) cmd_install ;;
    up)
      cmd_install
      kafka_start
      redis_start
      ;;
    down)
      kafka_stop
      redis_stop
      ;;
    clean) cmd_clean ;;
    kafka-start)
      cmd_install
      kafka_start
      ;;
    kafka-stop) kafka_stop ;;
    kafka-kill) kafka_stop KILL ;;
    kafka-restart)
      kafka_stop
      cmd_install
      kafka_start
      ;;
    redis-start)
      cmd_install
      redis_start
      ;;
    redis-stop) redis_stop ;;
    redis-kill) redis_stop KILL ;;
    redis-restart)
      redis_stop
      cmd_install
      redis_start
      ;;
    *) usage >&2; return 64 ;;
  esac
}

main "$@"
