# shellcheck shell=bash
# Redis high availability (REDIS_HA=1), for failover tests: two data nodes and
# one or three Sentinels watching master name "leadattr".
#
# Nodes are named by position, not role, because a failover swaps the roles:
#   redis-a     127.0.0.1:REDIS_PORT       the first primary
#   redis-b     127.0.0.1:REDIS_PORT+1     the first replica (replicaof redis-a)
#   sentinel-N  127.0.0.1:REDIS_SENTINEL_PORT+N-1
#
# Each config file is generated once (again only when the ports, the sentinel
# count or the timings change, with everything stopped). After that it belongs
# to Redis: Sentinel rewrites its own file on every state change (current
# primary, epochs, known peers), and sends CONFIG REWRITE to the nodes it
# reconfigures. Before a data node starts, its replicaof line is set from the
# Sentinels' files (the one with the highest config epoch), so a node that was
# down during a failover comes back as a replica of the current primary
# instead of as a second, stale primary.

HA_MASTER=leadattr
# Short, so a failover in a test takes seconds: the primary is judged down
# after 2 s without an answer; a failed failover is retried after 10 s.
HA_DOWN_AFTER_MS=2000
HA_FAILOVER_TIMEOUT_MS=10000
HA_QUORUM=$((REDIS_SENTINELS / 2 + 1))
HA_STAMP="$CONF_DIR/topology"
# Bumped when the generated files change, so existing ones are made again.
HA_CONF_VERSION=1

ha_data_nodes() { printf '%s\n' redis-a redis-b; }
ha_sentinels() { seq -f 'sentinel-%g' 1 "$REDIS_SENTINELS"; }
ha_all_nodes() {
  ha_sentinels
  ha_data_nodes
}

# ha_node NAME: the port and paths of a node as H_*.
ha_node() {
  H_NAME="$1"
  case "$1" in
    redis-a) H_PORT=$REDIS_PORT ;;
    redis-b) H_PORT=$((REDIS_PORT + 1)) ;;
    sentinel-*) H_PORT=$((REDIS_SENTINEL_PORT + ${1#sentinel-} - 1)) ;;
    *) die "unknown Redis node '$1'" ;;
  esac
  H_CONF="$CONF_DIR/$1.conf"
  H_DATA="$DATA_DIR/$1"
  H_LOG="$LOG_DIR/$1.log"
  H_PID="$RUN_DIR/$1.pid"
}

ha_is_sentinel() { [[ "$1" == sentinel-* ]]; }
ha_live_pid() { live_pid "$H_PID" "redis-server"; } # of the node ha_node chose

ha_topology() {
  printf 'redis-a=%s redis-b=%s sentinels=%s' "$REDIS_PORT" "$((REDIS_PORT + 1))" "$REDIS_SENTINEL_PORT"
  printf '+%s quorum=%s down-after=%s failover-timeout=%s config=%s\n' "$REDIS_SENTINELS" "$HA_QUORUM" \
    "$HA_DOWN_AFTER_MS" "$HA_FAILOVER_TIMEOUT_MS" "$HA_CONF_VERSION"
}

ha_write_node_conf() { # ha_write_node_conf NAME [PRIMARY_PORT]: a replica when PRIMARY_PORT is given
  ha_node "$1"
  {
    printf '# Generated once by deploy/local/services.sh; from then on rewritten by Redis\n'
    printf '# (CONFIG REWRITE from Sentinel) and services.sh sets replicaof before a start.\n'
    printf 'port %s\n' "$H_PORT"
    redis_common_conf "$H_DATA" "$H_LOG" "$H_PID"
    # A replica that (re)joins gets its full copy at once, not after the 5 s
    # the primary waits by default for more replicas to share one transfer.
    printf 'repl-diskless-sync-delay 0\n'
    if [[ -n "${2:-}" ]]; then
      printf 'replicaof 127.0.0.1 %s\n' "$2"
    fi
  } >"$H_CONF"
}

ha_write_sentinel_conf() { # ha_write_sentinel_conf NAME PRIMARY_PORT
  ha_node "$1"
  cat >"$H_CONF" <<EOF
# Generated once by deploy/local/services.sh; from then on Sentinel's own state
# (it rewrites this file: current primary, epochs, known replicas and peers).
bind 127.0.0.1
port $H_PORT
daemonize yes
pidfile $H_PID
logfile $H_LOG
dir $H_DATA
sentinel resolve-hostnames no
sentinel monitor $HA_MASTER 127.0.0.1 $2 $HA_QUORUM
sentinel down-after-milliseconds $HA_MASTER $HA_DOWN_AFTER_MS
sentinel failover-timeout $HA_MASTER $HA_FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $HA_MASTER 1
EOF
}

ha_any_running() {
  local name
  for name in $(ha_all_nodes); do
    ha_node "$name"
    ha_live_pid >/dev/null && return 0
  done
  return 1
}

# The configs, unless those of this topology exist already.
ha_prepare_confs() {
  local name want missing=0 primary=redis-a replica=redis-b
  want="$(ha_topology)"
  for name in $(ha_all_nodes); do
    [[ -s "$CONF_DIR/$name.conf" ]] || missing=1
  done
  if ((missing == 0)) && [[ -f "$HA_STAMP" && "$(cat "$HA_STAMP")" == "$want" ]]; then
    return 0
  fi
  if ha_any_running; then
    die "the redis-ha shape in $SHAPE_DIR runs with other settings ($(cat "$HA_STAMP" 2>/dev/null || echo unknown)); 'REDIS_HA=1 services.sh down' first"
  fi
  # Keep the data's current primary a primary: the node without replicaof.
  if [[ -s "$CONF_DIR/redis-a.conf" ]] && grep -q '^replicaof ' "$CONF_DIR/redis-a.conf" &&
    [[ -s "$CONF_DIR/redis-b.conf" ]] && ! grep -q '^replicaof ' "$CONF_DIR/redis-b.conf"; then
    primary=redis-b
    replica=redis-a
  fi
  log "redis-ha: writing configs ($want; primary $primary)"
  ha_node "$primary"
  local primary_port=$H_PORT
  ha_write_node_conf "$primary"
  ha_write_node_conf "$replica" "$primary_port"
  for name in $(ha_sentinels); do
    ha_write_sentinel_conf "$name" "$primary_port"
  done
  printf '%s\n' "$want" >"$HA_STAMP"
}

# The primary's port as the Sentinels' files record it (highest config epoch
# wins), or nothing before any Sentinel ran.
ha_primary_from_files() {
  local name
  for name in $(ha_sentinels); do
    ha_node "$name"
    [[ -s "$H_CONF" ]] || continue
    awk -v m="$HA_MASTER" '
      $1 == "sentinel" && $2 == "monitor" && $3 == m { port = $5 }
      $1 == "sentinel" && $2 == "config-epoch" && $3 == m { epoch = $4 }
      END { if (port != "") print (epoch == "" ? 0 : epoch), port }' "$H_CONF"
  done | sort -n | tail -n1 | awk '{print $2}'
}

# Before a data node starts: follow the primary the Sentinels chose.
ha_align_role() { # NAME (ha_node chose it)
  local primary tmp
  primary="$(ha_primary_from_files)"
  [[ -n "$primary" ]] || return 0
  tmp="$H_CONF.tmp.$$"
  grep -Ev '^(replicaof|slaveof) ' "$H_CONF" >"$tmp" || true
  if [[ "$primary" != "$H_PORT" ]]; then
    printf 'replicaof 127.0.0.1 %s\n' "$primary" >>"$tmp"
    log "$H_NAME: starting as a replica of 127.0.0.1:$primary (the Sentinels' primary)"
  fi
  mv -f "$tmp" "$H_CONF"
}

# ha_primary_port: the primary's port: what a live Sentinel says, else the data
# node that reports role:master. Nothing (and 1) when neither knows.
ha_primary_port() {
  local name answer
  for name in $(ha_sentinels); do
    ha_node "$name"
    answer="$(redis_cli "$H_PORT" sentinel get-master-addr-by-name "$HA_MASTER" 2>/dev/null | sed -n 2p || true)"
    if is_uint "$answer"; then
      printf '%s\n' "$answer"
      return 0
    fi
  done
  for name in $(ha_data_nodes); do
    ha_node "$name"
    if [[ "$(redis_info_field "$H_PORT" replication role)" == master ]]; then
      printf '%s\n' "$H_PORT"
      return 0
    fi
  done
  return 1
}

# ha_resolve WORD...: sets HA_TARGETS to the node names for redis-a, redis-b,
# a, b, primary, replica, sentinel (all of them) or sentinel-N; no word: every
# node. Roles are looked up now: after a failover, primary is the other node.
ha_resolve() {
  local word port primary replica
  HA_TARGETS=()
  if (($# == 0)); then
    mapfile -t HA_TARGETS < <(ha_all_nodes)
    return
  fi
  for word in "$@"; do
    case "$word" in
      a | redis-a) HA_TARGETS+=(redis-a) ;;
      b | redis-b) HA_TARGETS+=(redis-b) ;;
      primary | replica)
        port="$(ha_primary_port)" || die "no Sentinel or node knows the current primary"
        primary=redis-a replica=redis-b
        [[ "$port" == "$REDIS_PORT" ]] || primary=redis-b replica=redis-a
        HA_TARGETS+=("${!word}")
        ;;
      sentinel) mapfile -t -O "${#HA_TARGETS[@]}" HA_TARGETS < <(ha_sentinels) ;;
      sentinel-[0-9])
        ((${word#sentinel-} >= 1 && ${word#sentinel-} <= REDIS_SENTINELS)) || die "there are $REDIS_SENTINELS Sentinel(s): no $word"
        HA_TARGETS+=("$word")
        ;;
      *) die "unknown Redis node '$word' (redis-a, redis-b, primary, replica, sentinel, sentinel-1..$REDIS_SENTINELS)" ;;
    esac
  done
}

# ha_ready NAME: 0 when the node answers; a replica's link to its primary is up;
# a Sentinel knows the primary, a replica and all its peer Sentinels.
ha_ready() {
  ha_node "$1"
  [[ "$(redis_ping "$H_PORT")" == PONG ]] || return 1
  if ha_is_sentinel "$1"; then
    local fields
    fields="$(redis_cli "$H_PORT" sentinel master "$HA_MASTER" 2>/dev/null | tr -d '\r' | paste -d= - - || true)"
    [[ "$(sed -n 's/^num-slaves=//p' <<<"$fields")" -ge 1 ]] || return 1
    [[ "$(sed -n 's/^num-other-sentinels=//p' <<<"$fields")" == $((REDIS_SENTINELS - 1)) ]]
  elif [[ "$(redis_info_field "$H_PORT" replication role)" == slave ]]; then
    [[ "$(redis_info_field "$H_PORT" replication master_link_status)" == up ]]
  fi
}

ha_start() { # ha_start [NAME...]: start these nodes (default: all) unless running; wait until ready
  local name pid answer pending t0=$SECONDS names=()
  # Data nodes before Sentinels: a Sentinel that finds no primary for 2 s
  # starts a failover that cannot succeed.
  for name in $(ha_data_nodes) $(ha_sentinels); do
    if (($# == 0)) || [[ " $* " == *" $name "* ]]; then names+=("$name"); fi
  done
  prepare_dirs
  ha_prepare_confs
  for name in "${names[@]}"; do
    ha_node "$name"
    if pid="$(ha_live_pid)"; then
      if frozen "$pid"; then
        log "$name: pid $pid is frozen (SIGSTOP); sending SIGCONT"
        kill -s CONT "$pid"
      fi
      log "$name: already running (pid $pid) on 127.0.0.1:$H_PORT"
      continue
    fi
    rm -f "$H_PID"
    answer="$(redis_ping "$H_PORT")"
    if [[ -n "$answer" ]] || port_open "$H_PORT"; then
      die "$name: port $H_PORT is taken (answer: '${answer:-none}'), and a Redis this script did not start cannot be part of the redis-ha shape; free it or set REDIS_PORT/REDIS_SENTINEL_PORT"
    fi
    mkdir -p "$H_DATA"
    ha_is_sentinel "$name" || ha_align_role
    log "$name: starting on 127.0.0.1:$H_PORT"
    local args=("$H_CONF")
    ha_is_sentinel "$name" && args+=(--sentinel)
    if ! redis-server "${args[@]}" >>"$H_LOG" 2>&1 8>&- 9>&-; then
      tail_log "$H_LOG"
      die "$name: redis-server failed to start (log: $H_LOG)"
    fi
  done
  local deadline=$((SECONDS + SERVICES_TIMEOUT))
  while :; do
    pending=()
    for name in "${names[@]}"; do
      ha_ready "$name" || pending+=("$name")
    done
    ((${#pending[@]} == 0)) && break
    if ((SECONDS >= deadline)); then
      for name in "${pending[@]}"; do
        ha_node "$name"
        tail_log "$H_LOG"
        err "$name was not ready on 127.0.0.1:$H_PORT within ${SERVICES_TIMEOUT}s (log: $H_LOG)"
      done
      return 1
    fi
    sleep 0.3
  done
  log "redis-ha: ${names[*]} ready ($((SECONDS - t0))s); primary 127.0.0.1:$(ha_primary_port || echo '?')"
}

ha_stop() { # ha_stop SIGNAL [NAME...]: Sentinels first, so stopping nodes starts no failover
  local sig="$1" name pid group entries files
  shift
  local names=("$@")
  ((${#names[@]})) || mapfile -t names < <(ha_all_nodes)
  for group in sentinel data; do
    entries=()
    files=()
    for name in "${names[@]}"; do
      if ha_is_sentinel "$name"; then [[ "$group" == sentinel ]] || continue; else [[ "$group" == data ]] || continue; fi
      ha_node "$name"
      if pid="$(ha_live_pid)"; then
        log "$name: stopping pid $pid$([[ "$sig" == TERM ]] || printf ' with SIG%s' "$sig")"
        entries+=("$name=$pid")
        files+=("$H_PID")
      else
        log "$name: not running (no live pid in $H_PID)"
        rm -f "$H_PID"
      fi
    done
    ((${#entries[@]})) || continue
    stop_pids "$sig" "${entries[@]}"
    rm -f "${files[@]}"
    for name in "${entries[@]}"; do
      log "${name%%=*}: stopped"
    done
  done
}

ha_signal() { # ha_signal STOP|CONT NAME...
  local sig="$1" name pid
  shift
  for name in "$@"; do
    ha_node "$name"
    pid="$(ha_live_pid)" || die "$name: not running (no live pid in $H_PID)"
    kill -s "$sig" "$pid"
    log "$name: $([[ "$sig" == STOP ]] && echo frozen || echo thawed) (SIG$sig to pid $pid)"
  done
}

ha_status() { # one line per node; 1 unless all answer
  local name pid all=0 detail role
  for name in $(ha_data_nodes) $(ha_sentinels); do
    ha_node "$name"
    if ! pid="$(ha_live_pid)"; then
      log "$name: stopped (127.0.0.1:$H_PORT)"
      all=1
      continue
    fi
    if frozen "$pid"; then
      log "$name: frozen (SIGSTOP, pid $pid) on 127.0.0.1:$H_PORT"
      all=1
      continue
    fi
    if [[ "$(redis_ping "$H_PORT")" != PONG ]]; then
      log "$name: process $pid alive but not answering on 127.0.0.1:$H_PORT"
      all=1
      continue
    fi
    if ha_is_sentinel "$name"; then
      detail="primary $(redis_cli "$H_PORT" sentinel get-master-addr-by-name "$HA_MASTER" 2>/dev/null | paste -sd: - || echo '?')"
    else
      role="$(redis_info_field "$H_PORT" replication role)"
      if [[ "$role" == master ]]; then
        detail="primary, $(redis_info_field "$H_PORT" replication connected_slaves) replica(s) connected"
      else
        detail="replica of 127.0.0.1:$(redis_info_field "$H_PORT" replication master_port), link $(redis_info_field "$H_PORT" replication master_link_status)"
      fi
    fi
    log "$name: running (pid $pid) on 127.0.0.1:$H_PORT, $detail"
  done
  return "$all"
}
