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

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

# shellcheck source=SCRIPTDIR/lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"
# shellcheck source=SCRIPTDIR/lib/install.sh
. "$SCRIPT_DIR/lib/install.sh"
# shellcheck source=SCRIPTDIR/lib/kafka.sh
. "$SCRIPT_DIR/lib/kafka.sh"
# shellcheck source=SCRIPTDIR/lib/redis.sh
. "$SCRIPT_DIR/lib/redis.sh"

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
