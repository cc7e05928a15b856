#!/usr/bin/env bash
# Local, Docker-free Apache Kafka (KRaft) + Redis for dev, tests and CI, on 127.0.0.1 only.
#
# Usage: [SHAPE VARIABLES] deploy/local/services.sh COMMAND [NODE]
#
# Shapes (each keeps its data in its own folder; combine KAFKA_BROKERS with SECURE or REDIS_HA):
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
#   REDIS_HA=1      Redis redis-a (first primary) on REDIS_PORT, redis-b (replica) on
#                   REDIS_PORT+1, Sentinel(s) on REDIS_SENTINEL_PORT.. watching master name
#                   "leadattr" (quorum 1 of 1, or 2 of 3), down-after 2000 ms, failover-timeout
#                   10000 ms; plus one Kafka node (or three)     folder $SERVICES_DIR/redis-ha
#                   SECURE=1 with REDIS_HA=1 is not supported.
#
# Commands (all act on the shape the variables select):
#   install        idempotent: redis-server via apt (root only), checks java>=17, mvn,
#                  python3, fetches the Kafka jars from Maven Central into KAFKA_LIB_DIR
#                  (SECURE=1: openssl via apt, keytool; WITH_PROMETHEUS=1: prometheus, promtool)
#   up             install, then start every node of the shape that is not running (a frozen
#                  one gets SIGCONT) and wait until all answer: each Kafka node answers a
#                  Metadata request listing every broker; a cluster also answers group and
#                  transaction FindCoordinator (so groups and transactions work at once);
#                  Redis answers PING; a replica's link is up; a Sentinel knows the primary,
#                  the replica and its peers. Safe to call again.
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
#   redis-start [NODE] | redis-stop [NODE] | redis-restart [NODE] | redis-kill [NODE]
#   redis-freeze [NODE] | redis-thaw [NODE]
#                  the same for Redis. With REDIS_HA=1, NODE is redis-a, redis-b (or a, b),
#                  primary or replica (their roles now, asked from Sentinel), sentinel (all
#                  Sentinels) or sentinel-N; without NODE: all of them. A data node started
#                  after a failover comes back as a replica of the current primary.
#   redis-ha-primary
#                  print the port of the current primary (a live Sentinel's answer, else the
#                  node reporting role:master); exit 1 if none knows. Implies REDIS_HA=1.
#   help           this text
#
# Environment:
#   KAFKA_BROKERS          1 or 3 Kafka nodes                            default 1
#   SECURE=1               the secured shape                             default 0
#   REDIS_HA=1             Redis primary + replica + Sentinel            default 0
#   REDIS_SENTINELS        1 or 3 Sentinels (REDIS_HA=1)                 default 1
#   KAFKA_PORT             client port of node 1 on 127.0.0.1 (node N: +N-1)
#                                                                 default 9092, SECURE=1: 9093
#   KAFKA_CONTROLLER_PORT  KRaft controller port of node 1 (node N: +N-1) default KAFKA_PORT+1000
#   REDIS_PORT             Redis (REDIS_HA=1: redis-a; redis-b on +1)    default 6379, SECURE=1: 6380
#   REDIS_SENTINEL_PORT    Sentinel 1 (sentinel-N on +N-1)               default REDIS_PORT+20000
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
#                        log4j2*.properties, redis.conf; REDIS_HA: redis-a.conf, redis-b.conf,
#                        sentinel-N.conf (made once, then Redis' and Sentinel's own), topology
#   data/kafka/          KRaft metadata + topic data, formatted once (cluster: data/kafka-N/,
#                        one cluster id); data/redis/ (REDIS_HA: data/redis-a/, ...): AOF
#   logs/kafka.log       broker log (cluster: kafka-N.log); kafka.out: JVM stdout/stderr;
#                        redis.log (REDIS_HA: redis-a.log, sentinel-N.log); maven.log
#   run/kafka.pid, run/redis.pid
#                        cluster: run/kafka-N.pid; REDIS_HA: run/redis-a.pid, run/redis-b.pid,
#                        run/sentinel-N.pid (for tests that signal a process themselves)
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

# Asking who the primary is only makes sense of the high-availability shape.
[[ "${1:-}" == redis-ha-primary ]] && REDIS_HA=1

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
# shellcheck source=SCRIPTDIR/lib/redis_ha.sh
. "$SCRIPT_DIR/lib/redis_ha.sh"

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# The Redis of the shape: one server, or the high-availability set.
redis_up() { if [[ "$REDIS_HA" == 1 ]]; then ha_start "$@"; else redis_start; fi; }
redis_down() { # redis_down SIGNAL [NODE...]
  if [[ "$REDIS_HA" == 1 ]]; then ha_stop "$@"; else redis_stop "$1"; fi
}

cmd_status() {
  local all=0
  kafka_status || all=1
  if [[ "$REDIS_HA" == 1 ]]; then
    ha_status || all=1
  else
    redis_status || all=1
  fi
  return "$all"
}

cmd_clean() {
  kafka_stop TERM
  redis_down TERM
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

# Every pid file of every shape folder: Sentinels first (so stopping data
# nodes starts no failover), then everything else together.
cmd_down_all() {
  local dir file name needle pid label sentinels=() others=() files=()
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
      case "$name" in
        sentinel-*) sentinels+=("$label=$pid") ;;
        *) others+=("$label=$pid") ;;
      esac
    done
  done
  ((${#sentinels[@]} == 0)) || stop_pids TERM "${sentinels[@]}"
  ((${#others[@]} == 0)) || stop_pids TERM "${others[@]}"
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
    install | up | down | down-all | status | clean | redis-ha-primary)
      (($# == 0)) || die "$cmd takes no arguments"
      ;;
    kafka-start | kafka-stop | kafka-restart | kafka-kill | kafka-freeze | kafka-thaw) ;;
    redis-start | redis-stop | redis-restart | redis-kill | redis-freeze | redis-thaw)
      [[ "$REDIS_HA" == 1 || $# == 0 ]] || die "$cmd NODE needs REDIS_HA=1 (one Redis has no nodes to choose)"
      ;;
    *)
      usage >&2
      return 64
      ;;
  esac
  if [[ "$SECURE" == 1 && "$REDIS_HA" == 1 ]]; then
    die "SECURE=1 with REDIS_HA=1 is not supported: run them as two shapes"
  fi
  case "$cmd" in
    status)
      cmd_status
      return
      ;;
    redis-ha-primary)
      ha_primary_port
      return
      ;;
  esac
  take_lock
  case "$cmd" in
    kafka-*) node="$(kafka_node_arg "$@")" ;;
    redis-*)
      if [[ "$REDIS_HA" == 1 ]]; then
        ha_resolve "$@"
        set -- "${HA_TARGETS[@]}"
      fi
      ;;
  esac
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
      redis_up
      ;;
    down)
      kafka_stop TERM
      redis_down TERM
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
    redis-start) redis_up "$@" ;;
    redis-stop) redis_down TERM "$@" ;;
    redis-kill) redis_down KILL "$@" ;;
    redis-restart)
      redis_down TERM "$@"
      redis_up "$@"
      ;;
    redis-freeze) if [[ "$REDIS_HA" == 1 ]]; then ha_signal STOP "$@"; else redis_signal STOP; fi ;;
    redis-thaw) if [[ "$REDIS_HA" == 1 ]]; then ha_signal CONT "$@"; else redis_signal CONT; fi ;;
  esac
}

main "$@"
