#!/usr/bin/env bash
# The real Octavia, to compare l4lb's answers with: Debian's Octavia (Zed) API and worker with
# its no-op compute, network and amphora drivers (the drivers Octavia's own API test jobs run
# with), on a private MariaDB and RabbitMQ, against the Keystone of hack/openstack.sh, at
# http://127.0.0.1:19876. Registered in Keystone's catalog in region RegionTwo
# (`hack/octavia-catalog.sh http://127.0.0.1:19876 RegionTwo`), the same CLI call reaches
# l4lb (RegionOne) or Octavia (--os-region-name RegionTwo): TestCLIOutputsAsOctavias does.
#
#   hack/octavia-reference.sh up     install what is missing (as root), start
#   hack/octavia-reference.sh down   stop everything and remove the state
set -euo pipefail
cd "$(dirname "$0")/.."
state=${L4LB_OCTAVIA_REF_DIR:-/tmp/l4lb-octavia-ref}
DB_PORT=13306 MQ_PORT=15673 API_PORT=19876 REGION=RegionTwo
log() { echo "octavia-reference.sh: $*" >&2; }

down() {
  for f in "$state"/*.pid; do
    [[ -e "$f" ]] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  pkill -f -- "--config-file $state/octavia.conf" 2>/dev/null || true
  if [[ -d "$state/rabbit" ]]; then
    HOME=$state/rabbit RABBITMQ_NODENAME=l4lbref@localhost rabbitmqctl -q stop >/dev/null 2>&1 || true
  fi
  pkill -f -- "$state/rabbit" 2>/dev/null || true
  rm -rf "$state"
}

wait_port() { # port what
  for _ in $(seq 240); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.5; done
  log "$2 did not listen on $1; its log:"; tail -n 30 "$state/$2.log" >&2; return 1
}

up() {
  [[ $(id -u) == 0 ]] || { log "needs root (packages, MariaDB and RabbitMQ as their users)"; exit 1; }
  clouds=$(hack/openstack.sh up)
  export OS_CLIENT_CONFIG_FILE=$clouds OS_CLOUD=l4lb-local
  if curl -fsS -o /dev/null "http://127.0.0.1:$API_PORT/" 2>/dev/null; then
    return 0
  fi
  down
  if ! command -v octavia-worker >/dev/null || ! command -v mariadbd >/dev/null || ! command -v rabbitmq-server >/dev/null; then
    log "installing octavia-api, octavia-worker, mariadb-server, rabbitmq-server (Debian)"
    apt-get update -qq
    # The packages' own services are not ours: nothing starts at install.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      octavia-api octavia-worker mariadb-server rabbitmq-server python3-pymysql >/dev/null
    rm -f /usr/sbin/policy-rc.d
  fi
  mkdir -p "$state"/{mysql,rabbit,lock}

  log "MariaDB on 127.0.0.1:$DB_PORT"
  chown mysql "$state/mysql"
  mariadb-install-db --user=mysql --datadir="$state/mysql" --auth-root-authentication-method=normal >"$state/mariadb-install.log" 2>&1
  nohup mariadbd --user=mysql --datadir="$state/mysql" --port=$DB_PORT --bind-address=127.0.0.1 \
    --socket="$state/mysql/mysql.sock" --pid-file="$state/mysql/pid" >"$state/mariadb.log" 2>&1 &
  echo $! >"$state/mariadb.pid"
  wait_port $DB_PORT mariadb
  mariadb --socket="$state/mysql/mysql.sock" -u root -e "CREATE DATABASE octavia; CREATE USER 'octavia'@'127.0.0.1' IDENTIFIED BY 'octavia-db'; GRANT ALL ON octavia.* TO 'octavia'@'127.0.0.1';"

  log "RabbitMQ on 127.0.0.1:$MQ_PORT"
  export RABBITMQ_NODENAME=l4lbref@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$MQ_PORT \
    RABBITMQ_DIST_PORT=$((MQ_PORT + 20000)) RABBITMQ_MNESIA_BASE=$state/rabbit/mnesia RABBITMQ_LOG_BASE=$state/rabbit/log \
    RABBITMQ_ENABLED_PLUGINS_FILE=$state/rabbit/enabled_plugins RABBITMQ_PID_FILE=$state/rabbit/pid HOME=$state/rabbit
  echo '[].' >"$state/rabbit/enabled_plugins"
  chown -R rabbitmq "$state/rabbit" # Debian's rabbitmq-server runs as rabbitmq
  (cd "$state/rabbit" && exec nohup rabbitmq-server >"$state/rabbitmq.log" 2>&1) &
  echo $! >"$state/rabbitmq.pid"
  wait_port $MQ_PORT rabbitmq

  log "Keystone: the octavia user, region $REGION"
  os() { openstack "$@" >/dev/null; }
  openstack region show $REGION >/dev/null 2>&1 || os region create $REGION
  openstack user show octavia >/dev/null 2>&1 || os user create --domain default --password octavia-pass octavia
  os role add --project service --user octavia admin
  # The CLI looks names up in Neutron and Keystone in the region it calls: the same ones there.
  for svc in "network http://127.0.0.1:19696" "identity http://127.0.0.1:15000/v3/"; do
    read -r type url <<<"$svc"
    if [[ -z $(openstack endpoint list --service "$type" --region $REGION -f value -c ID) ]]; then
      for iface in public internal admin; do os endpoint create --region $REGION "$type" "$iface" "$url"; done
    fi
  done

  # The amphora flows make certificates even with no-op drivers: a CA of our own.
  mkdir -p "$state/certs"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$state/certs/ca.key" -out "$state/certs/ca.pem" \
    -subj /CN=l4lb-octavia-reference -days 30 >/dev/null 2>&1
  cat "$state/certs/ca.pem" "$state/certs/ca.key" >"$state/certs/client.pem"
  # Octavia's own user, for checking tokens and for calling other services.
  service_user="auth_url = http://127.0.0.1:15000
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = octavia
password = octavia-pass"
  cat >"$state/octavia.conf" <<CONF
[DEFAULT]
transport_url = rabbit://guest:guest@127.0.0.1:$MQ_PORT/
log_file = $state/octavia.log
[api_settings]
bind_host = 127.0.0.1
bind_port = $API_PORT
auth_strategy = keystone
enabled_provider_drivers = amphora:The Octavia Amphora driver (no-op drivers)
default_provider_driver = amphora
[database]
connection = mysql+pymysql://octavia:octavia-db@127.0.0.1:$DB_PORT/octavia
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:15000
$service_user
[service_auth]
$service_user
[controller_worker]
amphora_driver = amphora_noop_driver
compute_driver = compute_noop_driver
network_driver = network_noop_driver
volume_driver = volume_noop_driver
image_driver = image_noop_driver
loadbalancer_topology = SINGLE
workers = 1
client_ca = $state/certs/ca.pem
[certificates]
cert_generator = local_cert_generator
ca_certificate = $state/certs/ca.pem
ca_private_key = $state/certs/ca.key
[haproxy_amphora]
client_cert = $state/certs/client.pem
server_ca = $state/certs/ca.pem
[task_flow]
jobboard_enabled = False
[oslo_concurrency]
lock_path = $state/lock
[oslo_messaging]
topic = octavia_prov
CONF
  log "Octavia's database, API on 127.0.0.1:$API_PORT, worker"
  octavia-db-manage --config-file "$state/octavia.conf" upgrade head >"$state/octavia-db.log" 2>&1
  nohup octavia-worker --config-file "$state/octavia.conf" >"$state/octavia-worker.log" 2>&1 &
  echo $! >"$state/worker.pid"
  nohup octavia-api --config-file "$state/octavia.conf" >"$state/octavia-api.log" 2>&1 &
  echo $! >"$state/api.pid"
  wait_port $API_PORT octavia-api
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
