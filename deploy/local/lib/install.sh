# shellcheck shell=bash
# `install`: the programs the services need (apt, root only) and the Kafka jars
# (Maven Central, cached in LIB_DIR and shared by every shape).

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
  if [[ "$SECURE" == 1 ]] && ! command -v openssl >/dev/null 2>&1; then
    apt_install openssl
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
  if [[ "$SECURE" == 1 ]] && ! keytool_path >/dev/null; then
    missing+=("keytool (ships with the JDK/JRE next to java)")
  fi
  command -v mvn >/dev/null 2>&1 || missing+=("mvn (apt-get install maven)")
  command -v "$PYTHON" >/dev/null 2>&1 || missing+=("python3 (readiness probe)")
  if ((${#missing[@]} > 0)); then
    local IFS=';'
    die "missing: ${missing[*]}"
  fi

  fetch_kafka_jars
}

# keytool writes the Java truststore (a PKCS12 entry Java trusts needs an
# attribute OpenSSL 3.0 cannot set). It sits next to the java binary.
keytool_path() {
  local dir
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/keytool" ]]; then
    printf '%s\n' "$JAVA_HOME/bin/keytool"
  elif command -v keytool >/dev/null 2>&1; then
    command -v keytool
  elif dir="$(dirname "$(readlink -f "$(command -v "$JAVA")")" 2>/dev/null)" && [[ -x "$dir/keytool" ]]; then
    printf '%s\n' "$dir/keytool"
  else
    return 1
  fi
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
