# shellcheck shell=bash
# Kafka in KRaft mode: one node (KAFKA_BROKERS=1) or three (KAFKA_BROKERS=3),
# each a combined broker+controller with a static voter list; plaintext, or
# (SECURE=1) clients and brokers on SASL_SSL with SCRAM-SHA-512 and the
# controllers on mutual TLS. Config, storage format, start, readiness, stop.

# kafka_node I: the names, ports and paths of node I (1-based) as K_*. One node
# keeps the names it always had (conf/server.properties, data/kafka, run/kafka.pid).
kafka_node() {
  K_ID="$1"
  K_PORT=$((KAFKA_PORT + K_ID - 1))
  K_CPORT=$((KAFKA_CONTROLLER_PORT + K_ID - 1))
  if ((KAFKA_BROKERS == 1)); then
    K_NAME=kafka
    K_CONF="$CONF_DIR/server.properties"
  else
    K_NAME="kafka-$K_ID"
    K_CONF="$CONF_DIR/$K_NAME.properties"
  fi
  K_DATA="$DATA_DIR/$K_NAME"
  K_LOG="$LOG_DIR/$K_NAME.log"
  K_OUT="$LOG_DIR/$K_NAME.out"
  K_FORMAT_LOG="$LOG_DIR/$K_NAME-format.log"
  K_PID="$RUN_DIR/$K_NAME.pid"
}

kafka_ids() { seq 1 "$KAFKA_BROKERS"; }
kafka_all_ids() { kafka_ids | paste -sd, -; }
kafka_live_pid() { live_pid "$K_PID" "$K_CONF"; } # of the node kafka_node chose

# kafka_probe PORT [kafka_probe.py options]: 0 ready, 1 nothing listening,
# 2 not ready or not Kafka, 3 TLS/SASL refused. Prints the probe's answer line.
kafka_probe() {
  local port="$1" rc=0
  shift
  local args=("$port" 127.0.0.1 "$@")
  if [[ "$SECURE" == 1 ]]; then
    args+=(--cafile "$TLS_CA" --user admin --password-file "$SECRETS_DIR/kafka-admin.password")
  fi
  "$PYTHON" "$PROBE" "${args[@]}" 2>/dev/null || rc=$?
  return "$rc"
}

kafka_listener_conf() {
  if [[ "$SECURE" != 1 ]]; then
    cat <<EOF
inter.broker.listener.name=PLAINTEXT
listeners=PLAINTEXT://127.0.0.1:$K_PORT,CONTROLLER://127.0.0.1:$K_CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$K_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
EOF
    return
  fi
  local store_pw
  store_pw="$(secret tls-store)"
  cat <<EOF
# Clients and the brokers' own replication: SASL_SSL with SCRAM-SHA-512 only.
# The brokers authenticate to each other as the SCRAM user "broker".
listeners=SASL_SSL://127.0.0.1:$K_PORT,CONTROLLER://127.0.0.1:$K_CPORT
advertised.listeners=SASL_SSL://127.0.0.1:$K_PORT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="$(secret kafka-broker)";
# The KRaft controller listener cannot use SCRAM (its credentials live in the
# metadata the controllers serve), so it is TLS with client certificates
# required: only holders of this folder's server key reach it, as principal
# User:CN=$TLS_SERVER_CN.
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
listener.name.controller.ssl.client.auth=required
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_KEYSTORE
ssl.keystore.password=$store_pw
ssl.key.password=$store_pw
ssl.truststore.type=PKCS12
ssl.truststore.location=$TLS_TRUSTSTORE
ssl.truststore.password=$store_pw

# ACLs enforced: a principal without an ACL may do nothing. The service users
# (leadattr, producer) get theirs from the application's own provisioning.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:broker;User:CN=$TLS_SERVER_CN
EOF
}

kafka_replication_conf() {
  if ((KAFKA_BROKERS == 1)); then
    cat <<'EOF'
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
EOF
  else
    cat <<'EOF'
# Three brokers, replicated like production: every internal topic (group
# offsets, transaction state) and every topic created without an explicit
# factor has 3 replicas, and an acks=all write (every transactional one)
# needs 2 of them in sync. One node may be down and everything still works;
# with two down, writes stop instead of losing acknowledged data. A topic
# created with replication factor 1 still takes writes (Kafka caps the
# minimum at the factor), but is unavailable while its one broker is down:
# fault tests create theirs with factor 3 (or -1, this default).
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
default.replication.factor=3
min.insync.replicas=2
EOF
  fi
}

kafka_write_conf() { # of the node kafka_node chose
  local voters="" i
  for i in $(kafka_ids); do
    voters+="${voters:+,}$i@127.0.0.1:$((KAFKA_CONTROLLER_PORT + i - 1))"
  done
  (
    # The secured shape's file holds the store and inter-broker passwords.
    umask 077
    {
      cat <<EOF
# Generated by deploy/local/services.sh on every start; edits are overwritten.
# KRaft "combined" mode: this one JVM is both broker and controller
# (node $K_ID of $KAFKA_BROKERS).
process.roles=broker,controller
node.id=$K_ID
# Static quorum (not --standalone / dynamic): the voters' endpoints are read
# from here on every start instead of being frozen into the metadata log at
# format time, so changing KAFKA_CONTROLLER_PORT later still works with
# existing data.
controller.quorum.voters=$voters
controller.listener.names=CONTROLLER
log.dirs=$K_DATA

EOF
      kafka_listener_conf
      printf '\n'
      kafka_replication_conf
      cat <<'EOF'
# Fewer internal partitions than the default 50: creating them is the first
# FindCoordinator's cost; 10 is plenty for one machine.
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10

# Tests and demos join groups constantly: don't wait 3 s for more members.
group.initial.rebalance.delay.ms=0
# The service provisions its topics (leadattr topics create) with the
# settings it needs; a topic that appears on first use would hide a missing
# or misnamed one. 3 partitions for topics created without a count, so that
# partition assignment / rebalancing / per-key ordering get exercised locally.
auto.create.topics.enable=false
num.partitions=3

# broker.session.timeout.ms stays at its default (9 s): after a SIGKILL
# (kafka-kill) the restarted broker cannot re-register until the old session
# expires, so that restart takes ~15 s instead of ~7 s, and in a cluster the
# killed node's partitions wait that long for a new leader. Lowering it risks
# a broker being fenced during a GC/CPU stall on a busy 2-core CI box.
EOF
      if [[ -n "${KAFKA_EXTRA_CONFIG:-}" ]]; then
        printf '\n# From KAFKA_EXTRA_CONFIG (later keys override earlier ones):\n%s\n' "$KAFKA_EXTRA_CONFIG"
      fi
    } >"$K_CONF"
  )
}

kafka_write_log4j() {
  # Broker log to a file at INFO (one per node: kafka.log.name); the chattiest
  # loggers at WARN.
  cat >"$CONF_DIR/log4j2.properties" <<'EOF'
status = warn
name = kafka-local
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/${sys:kafka.log.name}.log
appender.file.filePattern = ${sys:kafka.logs.dir}/${sys:kafka.log.name}.log.%i
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

# All nodes of a cluster share one id: a node formatted later (its data was
# never there) takes the id its peers already have.
kafka_cluster_id() {
  local f id
  for f in "$DATA_DIR"/kafka/meta.properties "$DATA_DIR"/kafka-*/meta.properties; do
    [[ -f "$f" ]] || continue
    id="$(sed -n 's/^cluster\.id=//p' "$f")"
    if [[ -n "$id" ]]; then
      printf '%s\n' "$id"
      return
    fi
  done
  random_cluster_id
}

kafka_format() { # kafka_format I...: format the nodes among I... that never were
  local i cid="" scram=() user pids=() names=()
  if [[ "$SECURE" == 1 ]]; then
    for user in "${KAFKA_USERS[@]}"; do
      scram+=(--add-scram "SCRAM-SHA-512=[name=$user,password=$(secret "kafka-$user")]")
    done
  fi
  for i in "$@"; do
    kafka_node "$i"
    # meta.properties is written by a successful format; with it present the
    # data dir is kept as is (topics and offsets survive down/up).
    [[ -f "$K_DATA/meta.properties" ]] && continue
    [[ -n "$cid" ]] || cid="$(kafka_cluster_id)"
    log "$K_NAME: formatting Kafka storage in $K_DATA (cluster id $cid)"
    # A short-lived JVM: C1 only and the serial GC start faster. The nodes of
    # a cluster are formatted side by side.
    "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Dlog4j2.configurationFile="$CONF_DIR/log4j2-tools.properties" \
      -cp "$LIB_DIR/*" kafka.tools.StorageTool format \
      --cluster-id "$cid" --config "$K_CONF" --ignore-formatted "${scram[@]}" >"$K_FORMAT_LOG" 2>&1 8>&- 9>&- &
    pids+=("$!")
    names+=("$i")
  done
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      kafka_node "${names[$i]}"
      tail_log "$K_FORMAT_LOG"
      die "$K_NAME: Kafka storage format failed (log: $K_FORMAT_LOG)"
    fi
  done
}

kafka_launch() { # the node kafka_node chose
  log "$K_NAME: starting Kafka $KAFKA_VERSION (KRaft) on 127.0.0.1:$K_PORT, controller 127.0.0.1:$K_CPORT"
  # setsid + nohup: the broker outlives the shell that ran `up` (and its
  # process group, which test runners and CI may kill). Output that escapes
  # log4j (JVM errors, GC warnings) lands in kafka.out.
  # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is a list of JVM flags
  nohup setsid "$JAVA" $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true \
    -Dkafka.logs.dir="$LOG_DIR" -Dkafka.log.name="$K_NAME" \
    -Dlog4j2.configurationFile="$CONF_DIR/log4j2.properties" \
    -cp "$LIB_DIR/*" kafka.Kafka "$K_CONF" \
    >"$K_OUT" 2>&1 </dev/null 8>&- 9>&- &
  printf '%s\n' "$!" >"$K_PID"
}

# kafka_wait LAUNCHED I...: until nodes I... answer and see every running node
# registered (with all nodes running: and group and transaction coordinators
# answer); sets KAFKA_EXPECTED to those running nodes. On failure, stops the
# nodes in LAUNCHED (comma-separated ids).
kafka_wait() {
  local launched=",$1," deadline=$((SECONDS + SERVICES_TIMEOUT)) i pid expect="" opts=() pending=() rc
  shift
  for i in $(kafka_ids); do
    kafka_node "$i"
    kafka_live_pid >/dev/null && expect+="${expect:+,}$i"
  done
  KAFKA_EXPECTED="$expect"
  ((KAFKA_BROKERS > 1)) && opts=(--expect-brokers "$expect")
  while ((SECONDS < deadline)); do
    pending=()
    for i in "$@"; do
      kafka_node "$i"
      kafka_probe "$K_PORT" "${opts[@]}" >/dev/null && continue
      pending+=("$i")
      if [[ -s "$K_PID" ]] && ! alive "$(tr -dc '0-9' <"$K_PID")"; then
        tail_log "$K_OUT" "$K_LOG"
        err "$K_NAME (pid $(cat "$K_PID")) exited during startup; logs: $K_LOG, $K_OUT"
        rm -f "$K_PID"
        return 1
      fi
    done
    if ((${#pending[@]} == 0)); then
      # A fresh cluster creates its internal topics (RF 3) on the first
      # FindCoordinator; ask for both here so `up` returns a usable cluster.
      [[ "$KAFKA_BROKERS" == 1 || "$expect" != "$(kafka_all_ids)" ]] && return 0
      kafka_node "$1"
      rc=0
      kafka_probe "$K_PORT" "${opts[@]}" --coordinators >/dev/null || rc=$?
      ((rc == 0)) && return 0
    fi
    sleep 0.5
  done
  for i in "${pending[@]:-$1}"; do
    kafka_node "$i"
    tail_log "$K_OUT" "$K_LOG"
    err "$K_NAME was not ready on 127.0.0.1:$K_PORT within ${SERVICES_TIMEOUT}s (logs: $K_LOG)"
  done
  for i in $(kafka_ids); do
    [[ "$launched" == *",$i,"* ]] || continue
    kafka_node "$i"
    pid="$(kafka_live_pid)" || continue
    log "$K_NAME: stopping it"
    stop_pids TERM "$K_NAME=$pid"
    rm -f "$K_PID"
  done
  return 1
}

kafka_start() { # kafka_start [I...]: start nodes I... (default: all) unless running; wait until ready
  local ids=("$@") i pid rc launched=() t0=$SECONDS
  ((${#ids[@]})) || mapfile -t ids < <(kafka_ids)
  prepare_dirs
  for i in "${ids[@]}"; do
    kafka_node "$i"
    if pid="$(kafka_live_pid)"; then
      if frozen "$pid"; then
        log "$K_NAME: pid $pid is frozen (SIGSTOP); sending SIGCONT"
        kill -s CONT "$pid"
      fi
      if kafka_probe "$K_PORT" >/dev/null; then
        log "$K_NAME: already running (pid $pid) on 127.0.0.1:$K_PORT"
      else
        log "$K_NAME: process $pid exists but is not answering yet; waiting"
      fi
      continue
    fi
    rm -f "$K_PID"
    rc=0
    kafka_probe "$K_PORT" >/dev/null || rc=$?
    if ((rc == 0)); then
      log "$K_NAME: 127.0.0.1:$K_PORT is already served by a Kafka broker NOT started by this script (no pid file in $RUN_DIR); reusing it as is, 'down' will not stop it"
      continue
    elif ((rc == 3)); then
      die "$K_NAME: port $K_PORT is taken by a server that refuses this shape's CA or admin user; free it or set KAFKA_PORT"
    elif ((rc != 1)); then
      die "$K_NAME: port $K_PORT is taken by something that is not a ready Kafka broker; free it or set KAFKA_PORT"
    fi
    if port_open "$K_CPORT"; then
      die "$K_NAME: controller port $K_CPORT is taken; free it or set KAFKA_CONTROLLER_PORT"
    fi
    launched+=("$i")
  done
  if ((${#launched[@]})); then
    kafka_write_log4j
    for i in "${launched[@]}"; do
      kafka_node "$i"
      kafka_write_conf
    done
    kafka_format "${launched[@]}"
    t0=$SECONDS
    # All at once: a node of a cluster cannot finish starting before a
    # majority of the controllers runs.
    for i in "${launched[@]}"; do
      kafka_node "$i"
      kafka_launch
    done
  fi
  kafka_wait "$(IFS=, && printf '%s' "${launched[*]}")" "${ids[@]}" || return 1
  for i in "${launched[@]}"; do
    kafka_node "$i"
    log "$K_NAME: up on 127.0.0.1:$K_PORT (pid $(cat "$K_PID"), $((SECONDS - t0))s)"
  done
  if ((KAFKA_BROKERS == 1)); then
    return 0
  elif [[ "$KAFKA_EXPECTED" == "$(kafka_all_ids)" ]]; then
    log "kafka: cluster ready, brokers $KAFKA_EXPECTED on 127.0.0.1:$KAFKA_PORT-$((KAFKA_PORT + KAFKA_BROKERS - 1))"
  else
    log "kafka: brokers ${KAFKA_EXPECTED:-none} registered; the others are not running"
  fi
}

kafka_stop() { # kafka_stop SIGNAL [I...]: stop nodes I... (default: all) together
  local sig="$1" i pid entries=() files=()
  shift
  local ids=("$@")
  ((${#ids[@]})) || mapfile -t ids < <(kafka_ids)
  for i in "${ids[@]}"; do
    kafka_node "$i"
    if pid="$(kafka_live_pid)"; then
      log "$K_NAME: stopping pid $pid$([[ "$sig" == TERM ]] || printf ' with SIG%s' "$sig")"
      entries+=("$K_NAME=$pid")
      files+=("$K_PID")
    else
      log "$K_NAME: not running (no live pid in $K_PID)"
      rm -f "$K_PID"
    fi
  done
  ((${#entries[@]})) || return 0
  stop_pids "$sig" "${entries[@]}"
  rm -f "${files[@]}"
  for i in "${entries[@]}"; do
    log "${i%%=*}: stopped"
  done
}

kafka_signal() { # kafka_signal STOP|CONT [I...]: freeze or thaw nodes without stopping them
  local sig="$1" i pid
  shift
  local ids=("$@")
  ((${#ids[@]})) || mapfile -t ids < <(kafka_ids)
  for i in "${ids[@]}"; do
    kafka_node "$i"
    pid="$(kafka_live_pid)" || die "$K_NAME: not running (no live pid in $K_PID)"
    kill -s "$sig" "$pid"
    log "$K_NAME: $([[ "$sig" == STOP ]] && echo frozen || echo thawed) (SIG$sig to pid $pid)"
  done
}

kafka_status() { # one line per node; 1 unless all answer
  local i pid rc answer all=0
  for i in $(kafka_ids); do
    kafka_node "$i"
    rc=0
    answer="$(kafka_probe "$K_PORT")" || rc=$?
    if pid="$(kafka_live_pid)"; then
      if frozen "$pid"; then
        log "$K_NAME: frozen (SIGSTOP, pid $pid) on 127.0.0.1:$K_PORT"
        all=1
      elif ((rc == 0)); then
        log "$K_NAME: running (pid $pid) on 127.0.0.1:$K_PORT$( ((KAFKA_BROKERS == 1)) || printf ', sees brokers %s' "${answer##* }")"
      else
        log "$K_NAME: process $pid alive but not answering on 127.0.0.1:$K_PORT"
        all=1
      fi
    else
      case "$rc" in
        0) log "$K_NAME: not started by this script, but a Kafka broker answers on 127.0.0.1:$K_PORT" ;;
        1)
          log "$K_NAME: stopped"
          all=1
          ;;
        *)
          log "$K_NAME: stopped (port $K_PORT taken by something else)"
          all=1
          ;;
      esac
    fi
  done
  return "$all"
}
