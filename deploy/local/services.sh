#!/usr/bin/env bash
# Local, Docker-free Apache Kafka (KRaft) + Redis for dev, tests and CI, on 127.0.0.1 only.
#
# Usage: [SHAPE VARIABLES] deploy/local/services.sh COMMAND [NODE]
#
# Shapes (each keeps its data in its own folder; KAFKA_BROKERS and SECURE combine):
#   (default)       one Kafka node + one Redis                       folder $SERVICES_DIR
#   KAFKA_BROKERS=3 three Kafka nodes (broker+controller each, ids 1..3, static voters),
#                   clients on KAFKA_PORT..+2, controllers on KAFKA_CONTROLLER_PORT..+2;
#                   internal topics and topics created without a factor: RF 3,
#                   min.insync.replicas 2 (a topic created with RF 1 stops while its
#                   broker is down)                                  folder $SERVICES_DIR/cluster
#   SECURE=1        Kafka clients and brokers on SASL_SSL, SCRAM-SHA-512 only, ACLs enforced
#                   (StandardAuthorizer, allow.everyone.if.no.acl.found=false); the KRaft
#                   controller listener on TLS with client certificates required (SCRAM
#                   cannot serve it). Redis TLS only (port 0), default user off, ACL users
#                   admin and leadattr. A local CA, certificates and passwords made once.
#                   Default ports 9093 (controller 10093) and 6380, beside the plaintext pair.
#                   Writes $SERVICES_DIR/secure.env (consumer), secure-admin.env,
#                   secure-producer.env (see Files)              folder $SERVICES_DIR/secure
#                   With KAFKA_BROKERS=3: $SERVICES_DIR/secure-cluster, secure-cluster*.env
#
# Commands (all act on the shape the variables select):
#   install        idempotent: redis-server via apt (root only), checks java>=17, mvn,
#                  python3, fetches the Kafka jars from Maven Central into KAFKA_LIB_DIR
#                  (SECURE=1: openssl via apt, keytool; WITH_PROMETHEUS=1: prometheus, promtool)
#   up             install, then start every node of the shape that is not running (a frozen
#                  one gets SIGCONT) and wait until all answer: each Kafka node answers a
#                  Metadata request listing every broker; a cluster also answers group and
#                  transaction FindCoordinator (so groups and transactions work at once);
#                  Redis answers PING. Safe to call again.
#   down           stop every node of the shape (SIGTERM, up to STOP_TIMEOUT, then SIGKILL);
#                  keeps data
#   down-all       stop every node of every shape under SERVICES_DIR
#   status         one line per node; exit 0 only if all answer
#   clean          down, then delete the shape's data, logs and generated config (and for
#                  SECURE=1 its CA, passwords and env files); keeps the jar cache
#   kafka-start [N] | kafka-stop [N] | kafka-restart [N] | kafka-kill [N]
#   kafka-freeze [N] | kafka-thaw [N]
#                  one Kafka node N (1..KAFKA_BROKERS), or all without N; data kept.
#                  kill: SIGKILL (a crash); freeze/thaw: SIGSTOP/SIGCONT (a hung broker:
#                  connections stay open, nothing answers)
#   redis-start | redis-stop | redis-restart | redis-kill | redis-freeze | redis-thaw
#                  the same for Redis
#   help           this text
#
# Environment:
#   KAFKA_BROKERS          1 or 3 Kafka nodes                            default 1
#   SECURE=1               the secured shape                             default 0
#   KAFKA_PORT             client port of node 1 on 127.0.0.1 (node N: +N-1)
#                                                                 default 9092, SECURE=1: 9093
#   KAFKA_CONTROLLER_PORT  KRaft controller port of node 1 (node N: +N-1) default KAFKA_PORT+1000
#   REDIS_PORT             Redis port on 127.0.0.1                       default 6379, SECURE=1: 6380
#   REDIS_SERVICE_ACL      the leadattr Redis user's ACL rule (SECURE=1)
#                          default '~leadattr:* ~t*:* +@all -@dangerous +info +script|load'
#   SERVICES_DIR           state folder (self-git-ignored)               default <repo>/.services
#   SERVICES_TIMEOUT       seconds to wait for readiness                 default 60, cluster 180
#   STOP_TIMEOUT           seconds between SIGTERM and SIGKILL           default 30
#   KAFKA_HEAP_OPTS        JVM heap of each node                         default -Xmx512m -Xms256m
#   KAFKA_LIB_DIR          Kafka jar cache; point several clones or      default $SERVICES_DIR/lib
#                          SERVICES_DIRs at one folder to fetch once
#   KAFKA_EXTRA_CONFIG     extra server.properties lines (newline-separated), appended last
#   WITH_PROMETHEUS=1      `install` also installs Debian's prometheus package
#   PYTHON, JAVA_HOME/JAVA the python3 (readiness probe) and java to use
#
# Layout of a shape's folder ($SERVICES_DIR, or $SERVICES_DIR/<shape>):
#   conf/                generated server.properties (cluster: kafka-N.properties),
#                        log4j2*.properties, redis.conf
#   data/kafka/          KRaft metadata + topic data, formatted once (cluster: data/kafka-N/,
#                        one cluster id); data/redis/: AOF
#   logs/kafka.log       broker log (cluster: kafka-N.log); kafka.out: JVM stdout/stderr;
#                        redis.log; maven.log
#   run/kafka.pid, run/redis.pid
#                        cluster: run/kafka-N.pid (for tests that signal a process themselves)
#   lib/                 ($SERVICES_DIR only) Kafka jars (+ .stamp: version and pom hash)
#
# Files of SECURE=1 (<shape> is secure or secure-cluster):
#   tls/ca.pem           the local CA clients trust; tls/server.pem, server.key (Redis);
#                        tls/keystore.p12, truststore.p12 (Kafka); ca.key
#   secrets/*.password   mode 600: kafka-admin, kafka-broker, kafka-leadattr, kafka-producer
#                        (SCRAM users), redis-admin, redis-leadattr, tls-store
#   $SERVICES_DIR/<shape>.env           the consumer: SCRAM user leadattr, Redis user leadattr
#   $SERVICES_DIR/<shape>-admin.env     the same variables for the admin users
#   $SERVICES_DIR/<shape>-producer.env  Kafka variables only, SCRAM user producer
#                        mode 600; LEADS_KAFKA_BOOTSTRAP_SERVERS, LEADS_KAFKA_SECURITY_PROTOCOL,
#                        LEADS_KAFKA_SASL_MECHANISM, LEADS_KAFKA_SASL_USERNAME,
#                        LEADS_KAFKA_SASL_PASSWORD, LEADS_KAFKA_SSL_CA_LOCATION, LEADS_REDIS_URL
#                        (rediss://USER:PASSWORD@127.0.0.1:PORT/0?ssl_ca_certs=CA); use them as
#                        set -a; . .services/secure.env; set +a
#   The SCRAM users leadattr and producer have no ACLs: the application grants its own.
#
# One instance of a shape per SERVICES_DIR: to run a second one in parallel, give it its own
# SERVICES_DIR and ports.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

# shellcheck source=SCRIPTDIR/lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"
# shellcheck source=SCRIPTDIR/lib/install.sh
. "$SCRIPT_DIR/lib/install.sh"
# shellcheck source=SCRIPTDIR/lib/credentials.sh
. "$SCRIPT_DIR/lib/credentials.sh"
# shellcheck source=SCRIPTDIR/lib/tls.sh
. "$SCRIPT_DIR/lib/tls.sh"
# shellcheck source=SCRIPTDIR/lib/kafka.sh
. "$SCRIPT_DIR/lib/kafka.sh"
# shellcheck source=SCRIPTDIR/lib/redis.sh
. "$SCRIPT_DIR/lib/redis.sh"

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

cmd_status() {
  local all=0
  kafka_status || all=1
  redis_status || all=1
  return "$all"
}

cmd_clean() {
  kafka_stop TERM
  redis_stop TERM
  if [[ -z "$SHAPE" ]]; then
    log "deleting $DATA_DIR, $LOG_DIR, $CONF_DIR (jar cache $LIB_DIR kept)"
    rm -rf "$DATA_DIR" "$LOG_DIR" "$CONF_DIR" "$RUN_DIR"
  else
    log "deleting $SHAPE_DIR$([[ "$SECURE" == 0 ]] || printf ' and its env files')"
    rm -rf "$SHAPE_DIR"
    if [[ "$SECURE" == 1 ]]; then
      rm -f "$ENV_SERVICE" "$ENV_ADMIN" "$ENV_PRODUCER"
    fi
  fi
}

# Every pid file of every shape folder, stopped together.
cmd_down_all() {
  local dir file name needle pid label entries=() files=()
  for dir in "$SERVICES_DIR" "$SERVICES_DIR"/*/; do
    dir="${dir%/}"
    for file in "$dir"/run/*.pid; do
      [[ -f "$file" ]] || continue
      name="${file##*/}"
      name="${name%.pid}"
      label="${dir#"$SERVICES_DIR"}"
      label="${label#/}"
      label="${label:+$label/}$name"
      case "$name" in
        kafka*) needle="$dir/conf/" ;;
        *) needle=redis-server ;;
      esac
      if ! pid="$(live_pid "$file" "$needle")"; then
        rm -f "$file"
        continue
      fi
      log "$label: stopping pid $pid"
      files+=("$file")
      entries+=("$label=$pid")
    done
  done
  ((${#entries[@]} == 0)) || stop_pids TERM "${entries[@]}"
  ((${#files[@]} == 0)) || rm -f "${files[@]}"
  log "every shape under $SERVICES_DIR stopped"
}

kafka_node_arg() { # kafka_node_arg [N]: validates N, prints it (nothing: all nodes)
  (($# <= 1)) || die "one Kafka node at most (got: $*)"
  [[ -z "${1:-}" ]] && return 0
  if ! [[ "$1" =~ ^[1-9]$ ]] || (($1 > KAFKA_BROKERS)); then
    die "Kafka node must be 1..$KAFKA_BROKERS (got '$1')"
  fi
  printf '%s\n' "$1"
}

main() {
  local cmd="${1:-}" node
  shift || true
  case "$cmd" in
    -h | --help | help)
      usage
      return 0
      ;;
    install | up | down | down-all | status | clean)
      (($# == 0)) || die "$cmd takes no arguments"
      ;;
    kafka-start | kafka-stop | kafka-restart | kafka-kill | kafka-freeze | kafka-thaw) ;;
    redis-start | redis-stop | redis-restart | redis-kill | redis-freeze | redis-thaw)
      (($# == 0)) || die "$cmd takes no arguments"
      ;;
    *)
      usage >&2
      return 64
      ;;
  esac
  if [[ "$cmd" == status ]]; then
    cmd_status
    return
  fi
  take_lock
  [[ "$cmd" != kafka-* ]] || node="$(kafka_node_arg "$@")"
  case "$cmd" in
    up | kafka-start | kafka-restart | redis-start | redis-restart)
      cmd_install
      if [[ "$SECURE" == 1 ]]; then secure_prepare; fi
      ;;
  esac
  case "$cmd" in
    install) cmd_install ;;
    up)
      kafka_start
      redis_start
      ;;
    down)
      kafka_stop TERM
      redis_stop TERM
      ;;
    down-all) cmd_down_all ;;
    clean) cmd_clean ;;
    kafka-start) kafka_start ${node:+"$node"} ;;
    kafka-stop) kafka_stop TERM ${node:+"$node"} ;;
    kafka-kill) kafka_stop KILL ${node:+"$node"} ;;
    kafka-restart)
      kafka_stop TERM ${node:+"$node"}
      kafka_start ${node:+"$node"}
      ;;
    kafka-freeze) kafka_signal STOP ${node:+"$node"} ;;
    kafka-thaw) kafka_signal CONT ${node:+"$node"} ;;
    redis-start) redis_start ;;
    redis-stop) redis_stop TERM ;;
    redis-kill) redis_stop KILL ;;
    redis-restart)
      redis_stop TERM
      redis_start
      ;;
    redis-freeze) redis_signal STOP ;;
    redis-thaw) redis_signal CONT ;;
  esac
}

main "$@"
