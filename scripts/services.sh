#!/usr/bin/env bash
# Real backing services for development and tests, on loopback: Redis, ZooKeeper, Apache Cassandra.
#
#   scripts/services.sh up       install what is missing, start what is not answering, wait until each answers
#   scripts/services.sh status   one line per service; exit 0 when all selected services are up, 3 otherwise
#   scripts/services.sh down     stop what this script started (pid files in the state dir); leaves others alone
#   scripts/services.sh clean    down, then delete the state dir (data and logs)
#
# Environment:
#   SERVICES            subset to act on, default "redis zookeeper cassandra"
#   REDIS_PORT          6379
#   ZOOKEEPER_PORT      2181
#   CASSANDRA_PORT      9042 (CQL); CASSANDRA_STORAGE_PORT (default CASSANDRA_PORT-2042) and
#                       CASSANDRA_JMX_PORT (default CASSANDRA_PORT-1843) follow it
#   CHAT_SERVICES_DIR   state dir (data, logs, pid files), default ${TMPDIR:-/tmp}/chat-services-$(id -u)
#   CASSANDRA_VERSION   cassandra-all version from Maven Central, default: the one in scripts/cassandra/pom.xml
#   CASSANDRA_HEAP      max heap, default 1g
#   PYTHON              Python for the CQL readiness check, default <repo>/.venv/bin/python (uses
#                       cassandra-driver when importable, else a stdlib client); falls back to python3
#   REDIS_TIMEOUT / ZOOKEEPER_TIMEOUT / CASSANDRA_TIMEOUT   readiness timeouts in seconds (30 / 60 / 180)
#
# Redis and ZooKeeper come from Debian packages (apt-get install when missing); Cassandra is the real server
# from Maven Central (cassandra-all + dependencies), fetched once with Maven into
# ${XDG_CACHE_HOME:-$HOME/.cache}/chat-services/cassandra-<version>/lib and run on the machine's JDK (11 or 17).
# No systemd, no Docker: each service is a plain process whose cwd is its directory in the state dir.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

SERVICES=${SERVICES:-"redis zookeeper cassandra"}
REDIS_PORT=${REDIS_PORT:-6379}
ZOOKEEPER_PORT=${ZOOKEEPER_PORT:-2181}
CASSANDRA_PORT=${CASSANDRA_PORT:-9042}
CASSANDRA_STORAGE_PORT=${CASSANDRA_STORAGE_PORT:-$((CASSANDRA_PORT - 2042))}
CASSANDRA_JMX_PORT=${CASSANDRA_JMX_PORT:-$((CASSANDRA_PORT - 1843))}
CASSANDRA_HEAP=${CASSANDRA_HEAP:-1g}
REDIS_TIMEOUT=${REDIS_TIMEOUT:-30}
ZOOKEEPER_TIMEOUT=${ZOOKEEPER_TIMEOUT:-60}
CASSANDRA_TIMEOUT=${CASSANDRA_TIMEOUT:-180}
STATE_DIR=${CHAT_SERVICES_DIR:-${TMPDIR:-/tmp}/chat-services-$(id -u)}
STATE_DIR=$(realpath -m "$STATE_DIR") # absolute, symlinks resolved: compared with /proc/PID/cwd
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/chat-services
JAVA=${JAVA:-java}
MVN=${MVN:-mvn}
ZK_BIN=/usr/share/zookeeper/bin/zkServer.sh
# Own session for the servers, so a terminal hang-up or the caller's process group signals do not reach them.
SETSID=$(command -v setsid || true)

CASSANDRA_POM="$SCRIPT_DIR/cassandra/pom.xml"
if [[ -z "${CASSANDRA_VERSION:-}" ]]; then
  CASSANDRA_VERSION=$(sed -n 's:.*<cassandra.version>\(.*\)</cassandra.version>.*:\1:p' "$CASSANDRA_POM" | head -n1)
fi
CASSANDRA_LIB="$CACHE_ROOT/cassandra-$CASSANDRA_VERSION/lib"

log() { printf '%s\n' "$*" >&2; }
die() { log "services.sh: $*"; exit 1; }
now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

selected() { [[ " $SERVICES " == *" $1 "* ]]; }
for _svc in $SERVICES; do
  case $_svc in redis | zookeeper | cassandra) ;; *) die "unknown service in SERVICES: $_svc" ;; esac
done

port_of() {
  case $1 in
    redis) echo "$REDIS_PORT" ;;
    zookeeper) echo "$ZOOKEEPER_PORT" ;;
    cassandra) echo "$CASSANDRA_PORT" ;;
  esac
}

svc_dir() { echo "$STATE_DIR/$1"; }
pid_file() { echo "$STATE_DIR/$1/$1.pid"; }
log_file() {
  case $1 in
    redis) echo "$STATE_DIR/redis/redis.log" ;;
    zookeeper) echo "$STATE_DIR/zookeeper/zookeeper.log" ;;
    cassandra) echo "$STATE_DIR/cassandra/logs/system.log" ;;
  esac
}

# Is something accepting TCP connections on 127.0.0.1:$1?
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Is process $1 alive? (A zombie is not: our servers outlive this script, and whoever inherits them may
# reap them late, while kill -0 still succeeds on a zombie.)
alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# The pid recorded for $1 if that process is alive and is ours (its cwd is the service's state dir).
our_pid() {
  local f pid cwd
  f=$(pid_file "$1")
  [[ -s "$f" ]] || return 1
  pid=$(<"$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || return 1
  [[ "$cwd" == "$(svc_dir "$1")" ]] || return 1
  echo "$pid"
}

# --- health checks ---------------------------------------------------------------------------------------

redis_ok() {
  if command -v redis-cli >/dev/null; then
    [[ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == "PONG" ]]
  else
    [[ "$(timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "PING\r\n" >&3 && head -n1 <&3' _ "$REDIS_PORT" 2>/dev/null)" == $'+PONG\r' ]]
  fi
}

# Send a ZooKeeper four-letter word, print the answer.
zk_4lw() {
  timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "%s" "$2" >&3 && cat <&3' _ "$ZOOKEEPER_PORT" "$1" 2>/dev/null
}

zookeeper_ok() {
  [[ "$(zk_4lw ruok)" == "imok" && "$(zk_4lw srvr)" == *"Mode: standalone"* ]]
}

pick_python() {
  local py=${PYTHON:-$REPO_ROOT/.venv/bin/python}
  if [[ -x "$py" ]] || command -v "$py" >/dev/null 2>&1; then echo "$py"; else echo python3; fi
}

# $1 = timeout seconds, $2 = pid to watch (optional). Prints the release version.
cassandra_query() {
  "$(pick_python)" "$SCRIPT_DIR/cassandra/cql_ready.py" 127.0.0.1 "$CASSANDRA_PORT" "$1" "${2:-}"
}

cassandra_ok() { port_open "$CASSANDRA_PORT" && cassandra_query 5 >/dev/null 2>&1; }

svc_ok() { "${1}_ok"; }

# --- installation ----------------------------------------------------------------------------------------

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root (or sudo) to run: $*"
  fi
}

apt_install() {
  local t0 apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -q)
  t0=$(now)
  log "install: apt-get install $* ..."
  if ! as_root timeout 900 "${apt[@]}" install --no-install-recommends "$@" >"$STATE_DIR/apt.log" 2>&1; then
    log "install: first attempt failed, running apt-get update"
    as_root timeout 600 "${apt[@]}" update >>"$STATE_DIR/apt.log" 2>&1 || true
    as_root timeout 900 "${apt[@]}" install --no-install-recommends "$@" >>"$STATE_DIR/apt.log" 2>&1 || {
      tail -n 30 "$STATE_DIR/apt.log" >&2
      die "apt-get install $* failed (log: $STATE_DIR/apt.log)"
    }
  fi
  log "install: done in $(elapsed "$t0")"
}

# Debian packages needed by the services that are about to be started.
ensure_packages() {
  local pkgs=()
  if [[ " $* " == *" redis "* ]] && ! command -v redis-server >/dev/null; then pkgs+=(redis-server); fi
  if [[ " $* " == *" zookeeper "* ]] && [[ ! -x "$ZK_BIN" ]]; then pkgs+=(zookeeper); fi
  if [[ " $* " == *" cassandra "* ]]; then
    command -v "$JAVA" >/dev/null || pkgs+=(openjdk-17-jre-headless)
    command -v "$MVN" >/dev/null || pkgs+=(maven)
  fi
  if [[ " $* " == *" zookeeper "* ]] && ! command -v "$JAVA" >/dev/null; then pkgs+=(openjdk-17-jre-headless); fi
  if ((${#pkgs[@]})); then
    # shellcheck disable=SC2207
    pkgs=($(printf '%s\n' "${pkgs[@]}" | sort -u))
    apt_install "${pkgs[@]}"
  fi
}

# Cassandra jars into the cache (once per version). Prints nothing on a warm cache.
fetch_cassandra() {
  local t0 tmp
  [[ -f "$CASSANDRA_LIB/.complete" ]] && return 0
  t0=$(now)
  log "cassandra: fetching cassandra-all $CASSANDRA_VERSION and dependencies from Maven Central into $CASSANDRA_LIB ..."
  mkdir -p "$(dirname "$CASSANDRA_LIB")"
  tmp="$CASSANDRA_LIB.tmp.$$"
  rm -rf "$tmp"
  if ! timeout 900 "$MVN" -q -B -f "$CASSANDRA_POM" -Dcassandra.version="$CASSANDRA_VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$tmp" >"$STATE_DIR/cassandra/mvn.log" 2>&1; then
    tail -n 30 "$STATE_DIR/cassandra/mvn.log" >&2
    rm -rf "$tmp"
    die "cassandra: maven fetch failed (log: $STATE_DIR/cassandra/mvn.log)"
  fi
  [[ -f "$tmp/cassandra-all-$CASSANDRA_VERSION.jar" ]] || die "cassandra: cassandra-all-$CASSANDRA_VERSION.jar missing after fetch"
  touch "$tmp/.complete"
  rm -rf "$CASSANDRA_LIB"
  mv "$tmp" "$CASSANDRA_LIB"
  log "cassandra: fetched $(find "$CASSANDRA_LIB" -name '*.jar' | wc -l) jars in $(elapsed "$t0")"
}

# --- launching -------------------------------------------------------------------------------------------

start_redis() {
  local d; d=$(svc_dir redis)
  rm -f "$d/redis.pid"
  (exec 9>&- && cd "$d" && redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --protected-mode no \
    --save '' --appendonly no --daemonize yes --pidfile "$d/redis.pid" --dir "$d" \
    --logfile "$d/redis.log" --databases 16) >/dev/null
  # redis-server daemonizes; the child writes the pid file.
  local i
  for i in $(seq 50); do [[ -s "$d/redis.pid" ]] && break; sleep 0.1; done
  [[ -s "$d/redis.pid" ]] || { tail -n 30 "$d/redis.log" >&2 || true; die "redis: no pid file"; }
}

start_zookeeper() {
  local d cp j; d=$(svc_dir zookeeper)
  mkdir -p "$d/data"
  cat >"$d/zoo.cfg" <<EOF
# generated by scripts/services.sh
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$d/data
clientPort=$ZOOKEEPER_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
minSessionTimeout=1000
maxSessionTimeout=60000
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
EOF
  cat >"$d/log4j.properties" <<'EOF'
# generated by scripts/services.sh: everything to stdout, which the script sends to zookeeper.log
log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] - %m%n
EOF
  # Same classpath as Debian's zkServer.sh (/etc/zookeeper/conf/environment: zookeeper.jar, whose manifest
  # lists its dependencies), plus the slf4j->log4j binding from the package's dependencies so it logs.
  cp=/usr/share/java/zookeeper.jar
  for j in /usr/share/java/slf4j-log4j12.jar /usr/share/java/log4j-1.2.jar; do [[ -f "$j" ]] && cp="$cp:$j"; done
  (
    exec 9>&- # the state-dir lock must not outlive this script
    cd "$d"
    exec $SETSID "$JAVA" -Xms64m -Xmx256m -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError \
      -Djava.net.preferIPv4Stack=true \
      -Dlog4j.configuration="file:$d/log4j.properties" \
      -Dzookeeper.log.dir="$d" -Dzookeeper.admin.enableServer=false \
      -cp "$cp" org.apache.zookeeper.server.quorum.QuorumPeerMain "$d/zoo.cfg" \
      >"$d/zookeeper.log" 2>&1 </dev/null
  ) &
  echo $! >"$d/zookeeper.pid"
}

cassandra_jvm_opts() {
  local d=$1 jamm
  CASSANDRA_JVM_OPTS=(
    # conf/jvm-server.options (general settings; AlwaysPreTouch left out: it slows the start)
    -ea -da:net.openhft...
    -XX:+UseThreadPriorities -Xss256k -XX:+UseTLAB -XX:+ResizeTLAB -XX:+PerfDisableSharedMem
    -Djava.net.preferIPv4Stack=true
    # conf/jvm17-server.options: G1 (region size left to the JVM for a 1 GiB heap), except the pause
    # goal: 50 ms instead of 300 ms, since this latency-oriented dev/test node should not allow 300 ms
    # pauses (BENCHMARKS.md: measured together with memtable_allocation_type: offheap_objects in
    # cassandra.yaml, shorter G1 pauses and +12-22 % store throughput)
    -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1
    -XX:G1RSetUpdatingPauseTimePercent=5 -XX:MaxGCPauseMillis=50 -XX:InitiatingHeapOccupancyPercent=70
    # conf/jvm17-server.options: JPMS
    -Djdk.attach.allowAttachSelf=true
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED
    --add-exports java.base/java.lang.ref=ALL-UNNAMED
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens java.base/java.lang.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.io=ALL-UNNAMED
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
    --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.util=ALL-UNNAMED
    # conf/jvm17-server.options: Netty
    -Dio.netty.tryReflectionSetAccessible=true
    -Dio.netty.allocator.useCacheForAllThreads=true
    -Dio.netty.allocator.maxOrder=11
    # heap: modest, 2-core machine
    -Xms512m "-Xmx$CASSANDRA_HEAP" -XX:+ExitOnOutOfMemoryError
    "-Xlog:gc:file=$d/logs/gc.log:time,uptime:filecount=3,filesize=10m"
    # what bin/cassandra and cassandra-env.sh pass
    -Dcassandra-foreground=yes
    "-Dcassandra.config=file://$SCRIPT_DIR/cassandra/cassandra.yaml"
    "-Dcassandra.storagedir=$d/data"
    "-Dcassandra.logdir=$d/logs"
    "-Dcassandra.triggers_dir=$d/triggers"
    "-Dlogback.configurationFile=file://$SCRIPT_DIR/cassandra/logback.xml"
    "-Dcassandra.native_transport_port=$CASSANDRA_PORT"
    "-Dcassandra.storage_port=$CASSANDRA_STORAGE_PORT"
    "-Dcassandra.jmx.local.port=$CASSANDRA_JMX_PORT"
    -Dcom.sun.management.jmxremote.authenticate=false
    # fast single-node start
    -Dcassandra.skip_wait_for_gossip_to_settle=0
    -Dcassandra.ring_delay_ms=1000
    -Dcassandra.disable_auth_caches_remote_configuration=true
    -Dcassandra.unsafesystem=true
    -Dcassandra.shutdown_announce_in_ms=0
    -Dchronicle.analytics.disable=true -Dchronicle.announcer.disable=true
  )
  jamm=$(find "$CASSANDRA_LIB" -maxdepth 1 -name 'jamm-*.jar' | head -n1)
  [[ -n "$jamm" ]] && CASSANDRA_JVM_OPTS+=("-javaagent:$jamm")
  return 0
}

start_cassandra() {
  local d; d=$(svc_dir cassandra)
  mkdir -p "$d/data" "$d/logs" "$d/triggers"
  local p
  for p in "$CASSANDRA_STORAGE_PORT" "$CASSANDRA_JMX_PORT"; do
    port_open "$p" && die "cassandra: port $p (storage/JMX) is already in use; set CASSANDRA_STORAGE_PORT / CASSANDRA_JMX_PORT"
  done
  cassandra_jvm_opts "$d"
  (
    exec 9>&- # the state-dir lock must not outlive this script
    cd "$d"
    export MALLOC_ARENA_MAX=4
    exec $SETSID "$JAVA" "${CASSANDRA_JVM_OPTS[@]}" -cp "$CASSANDRA_LIB/*" org.apache.cassandra.service.CassandraDaemon \
      >"$d/logs/cassandra.out" 2>&1 </dev/null
  ) &
  echo $! >"$d/cassandra.pid"
}

# --- waiting ---------------------------------------------------------------------------------------------

fail_start() {
  local svc=$1 why=$2 pid
  log "$svc: $why"
  log "---- last lines of $(log_file "$svc") ----"
  tail -n 40 "$(log_file "$svc")" 2>/dev/null | cut -c1-400 >&2 || true
  if [[ $svc == cassandra && -s "$STATE_DIR/cassandra/logs/cassandra.out" ]]; then
    log "---- last lines of $STATE_DIR/cassandra/logs/cassandra.out ----"
    tail -n 20 "$STATE_DIR/cassandra/logs/cassandra.out" | cut -c1-400 >&2 || true
  fi
  if pid=$(our_pid "$svc"); then
    log "$svc: stopping the process we started (pid $pid)"
    stop_pid "$svc" "$pid" 10 || true
  fi
  rm -f "$(pid_file "$svc")"
  return 1
}

who_str() { if [[ -n "$1" ]]; then echo "pid $1"; else echo "not started by this script"; fi; }

# Wait until $1 answers; $2 = timeout seconds, $3 = start time.
wait_for() {
  local svc=$1 timeout=$2 t0=$3 pid deadline version
  pid=$(our_pid "$svc") || pid=""
  deadline=$(($(date +%s) + timeout))
  if [[ $svc == cassandra ]]; then
    # Cheap wait for the CQL port first, then a real query (which also waits, until the deadline).
    while ! port_open "$CASSANDRA_PORT"; do
      [[ -n "$pid" ]] && ! alive "$pid" && { fail_start "$svc" "process exited during start"; return 1; }
      (($(date +%s) >= deadline)) && { fail_start "$svc" "not answering on port $CASSANDRA_PORT after ${timeout}s"; return 1; }
      sleep 0.5
    done
    local left=$((deadline - $(date +%s)))
    ((left < 5)) && left=5
    if ! version=$(cassandra_query "$left" "$pid" 2>"$STATE_DIR/cassandra/ready.err"); then
      fail_start "$svc" "CQL query did not succeed within ${timeout}s: $(tail -n1 "$STATE_DIR/cassandra/ready.err")"
      return 1
    fi
    log "cassandra: up on 127.0.0.1:$CASSANDRA_PORT in $(elapsed "$t0") (release $version, $(who_str "$pid"))"
    return 0
  fi
  until svc_ok "$svc"; do
    [[ -n "$pid" ]] && ! alive "$pid" && { fail_start "$svc" "process exited during start"; return 1; }
    (($(date +%s) >= deadline)) && { fail_start "$svc" "not answering on port $(port_of "$svc") after ${timeout}s"; return 1; }
    sleep 0.2
  done
  log "$svc: up on 127.0.0.1:$(port_of "$svc") in $(elapsed "$t0") ($(who_str "$pid"))"
}

# --- stopping --------------------------------------------------------------------------------------------

# $1 service, $2 pid, $3 seconds to wait after SIGTERM before SIGKILL
stop_pid() {
  local svc=$1 pid=$2 grace=$3 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < grace * 10; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  log "$svc: still running after ${grace}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do alive "$pid" || return 0; sleep 0.1; done
  return 1
}

# --- commands --------------------------------------------------------------------------------------------

lock_state() {
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/.lock"
  flock -w 900 9 || die "another services.sh holds $STATE_DIR/.lock"
}

cmd_up() {
  lock_state
  local svc t_all to_start=() pid
  t_all=$(now)
  log "services.sh: state dir $STATE_DIR"
  for svc in cassandra redis zookeeper; do
    selected "$svc" || continue
    mkdir -p "$(svc_dir "$svc")"
    if pid=$(our_pid "$svc"); then
      # Ours and alive: it may still be starting (e.g. an earlier up that was interrupted); wait below.
      to_start+=("$svc:running:$pid")
      continue
    fi
    rm -f "$(pid_file "$svc")"
    if port_open "$(port_of "$svc")"; then
      to_start+=("$svc:external")
      continue
    fi
    to_start+=("$svc:start")
  done

  local need=() item
  for item in "${to_start[@]}"; do
    if [[ $item == *:start ]]; then need+=("${item%%:*}"); fi
  done

  # Installs: Maven fetch (network) in the background while apt-get installs packages.
  local fetch_pid=""
  if [[ " ${need[*]-} " == *" cassandra "* ]] && [[ ! -f "$CASSANDRA_LIB/.complete" ]]; then
    if command -v "$MVN" >/dev/null; then
      fetch_cassandra &
      fetch_pid=$!
    fi
  fi
  ensure_packages "${need[@]-}"
  if [[ " ${need[*]-} " == *" cassandra "* ]]; then
    if [[ -n "$fetch_pid" ]]; then wait "$fetch_pid" || die "cassandra: fetch failed"; else fetch_cassandra; fi
  fi

  # Launch: Cassandra first (the slow one), then the others; wait for Cassandra last.
  declare -A t0
  for item in "${to_start[@]}"; do
    svc=${item%%:*}
    case $item in
      *:start)
        t0[$svc]=$(now)
        log "$svc: starting on 127.0.0.1:$(port_of "$svc") ..."
        "start_$svc"
        ;;
      *:running:*)
        t0[$svc]=$(now)
        log "$svc: already running (started by this script, pid ${item##*:})"
        ;;
      *:external)
        t0[$svc]=$(now)
        log "$svc: port $(port_of "$svc") already in use by a process this script did not start; checking it answers"
        ;;
    esac
  done

  local rc=0
  for svc in redis zookeeper cassandra; do
    selected "$svc" || continue
    local timeout_var="${svc^^}_TIMEOUT"
    if ! wait_for "$svc" "${!timeout_var}" "${t0[$svc]}"; then rc=1; fi
  done
  if ((rc)); then die "some services did not come up (state dir $STATE_DIR)"; fi
  log "services.sh: all up in $(elapsed "$t_all") (installs and downloads included)"
}

cmd_down() {
  lock_state
  local svc pid grace
  for svc in cassandra zookeeper redis; do
    selected "$svc" || continue
    if pid=$(our_pid "$svc"); then
      grace=10
      [[ $svc == cassandra ]] && grace=30
      log "$svc: stopping pid $pid"
      stop_pid "$svc" "$pid" "$grace" || log "$svc: pid $pid did not exit"
      rm -f "$(pid_file "$svc")"
    else
      rm -f "$(pid_file "$svc")"
      if port_open "$(port_of "$svc")"; then
        log "$svc: port $(port_of "$svc") is served by a process this script did not start; leaving it alone"
      else
        log "$svc: not running"
      fi
    fi
  done
}

cmd_status() {
  local svc pid state all_up=0
  for svc in redis zookeeper cassandra; do
    selected "$svc" || continue
    pid=$(our_pid "$svc") || pid=""
    if svc_ok "$svc"; then state=up; else state=down; all_up=3; fi
    if [[ -n "$pid" ]]; then
      printf '%-10s %-5s port %-5s pid %s (started by services.sh)\n' "$svc" "$state" "$(port_of "$svc")" "$pid"
    elif [[ $state == up ]]; then
      printf '%-10s %-5s port %-5s pid -  (not started by services.sh)\n' "$svc" "$state" "$(port_of "$svc")"
    else
      printf '%-10s %-5s port %-5s pid -\n' "$svc" "$state" "$(port_of "$svc")"
    fi
  done
  return $all_up
}

cmd_clean() {
  SERVICES="redis zookeeper cassandra" cmd_down
  exec 9>&-
  rm -rf "$STATE_DIR"
  log "services.sh: removed $STATE_DIR"
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  clean) cmd_clean ;;
  *)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
