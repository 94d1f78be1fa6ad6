#!/usr/bin/env bash
# A real OpenStack for tests and for trying the openstack provider without a cloud: Keystone
# and Neutron (Debian's packages, OpenStack Zed) on loopback, on a private PostgreSQL cluster,
# with the seed's networks: private-net/private-subnet (192.0.2.0/24), an external public-net
# with public-subnet (203.0.113.0/24), and router-1 between them. No agents run: Neutron keeps
# ports, addresses, allowed address pairs and floating IPs and answers the API as a cloud
# does, but moves no packets.
#
#   hack/openstack.sh up     install what is missing (as root), start, print the clouds.yaml path
#   hack/openstack.sh down   stop everything and remove the state
#   hack/openstack.sh stop-neutron|start-neutron    take Neutron away and bring it back
#   hack/openstack.sh stop-keystone|start-keystone  the same for Keystone
set -euo pipefail
cd "$(dirname "$0")/.."
state=${L4LB_OPENSTACK_DIR:-/tmp/l4lb-openstack}
PG_PORT=15432 KS_PORT=15000 NEUTRON_PORT=19696
DB="postgresql+psycopg2://l4lb:l4lb-db@127.0.0.1:$PG_PORT"
PASSWORD=l4lb-admin
log() { echo "openstack.sh: $*" >&2; }

down() {
  for f in "$state"/*.pid; do
    [[ -e "$f" ]] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  # neutron-server's workers outlive a parent that is gone before them.
  pkill -f -- "--config-file $state/neutron.conf" 2>/dev/null || true
  if [[ -d "$state/pg" ]]; then
    su postgres -s /bin/sh -c "pg_ctl -D '$state/pg' -m immediate stop" >/dev/null 2>&1 || true
  fi
  rm -rf "$state"
}

wait_http() { # url what
  for _ in $(seq 120); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.5; done
  log "$2 did not answer at $1; its log:"; tail -n 30 "$state/$2.log" >&2; return 1
}

up() {
  if [[ -s "$state/clouds.yaml" ]] && curl -fsS -o /dev/null "http://127.0.0.1:$NEUTRON_PORT/" 2>/dev/null &&
     curl -fsS -o /dev/null "http://127.0.0.1:$KS_PORT/v3" 2>/dev/null; then
    echo "$state/clouds.yaml"; return 0
  fi
  [[ $(id -u) == 0 ]] || { log "needs root (packages, PostgreSQL as the postgres user)"; exit 1; }
  down
  if ! command -v neutron-server >/dev/null || ! command -v keystone-manage >/dev/null || ! command -v openstack >/dev/null ||
     ! dpkg -s python3-octaviaclient >/dev/null 2>&1 ||
     ! python3 -c 'import psycopg2' 2>/dev/null && ! /usr/bin/python3 -c 'import psycopg2' 2>/dev/null; then
    log "installing keystone, neutron-server, python3-psycopg2, python3-openstackclient, python3-octaviaclient (Debian)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      keystone neutron-server python3-psycopg2 python3-openstackclient python3-octaviaclient >/dev/null
  fi
  # The packages' own services, if the installer started any, are not ours.
  service keystone stop >/dev/null 2>&1 || true
  service neutron-server stop >/dev/null 2>&1 || true
  service neutron-api stop >/dev/null 2>&1 || true
  mkdir -p "$state"/{pg,fernet-keys,credential-keys,neutron,lock}
  chown postgres "$state/pg"

  log "PostgreSQL on 127.0.0.1:$PG_PORT"
  pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | tail -n 1)")
  su postgres -s /bin/sh -c "$pgbin/initdb -D '$state/pg' -A trust -U postgres >/dev/null"
  su postgres -s /bin/sh -c "$pgbin/pg_ctl -D '$state/pg' -l '$state/pg/log' -o '-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1' -w start >/dev/null"
  psql="psql -h 127.0.0.1 -p $PG_PORT -U postgres -q"
  $psql -c "CREATE USER l4lb PASSWORD 'l4lb-db'"
  $psql -c "CREATE DATABASE keystone OWNER l4lb"
  $psql -c "CREATE DATABASE neutron OWNER l4lb"

  log "Keystone on 127.0.0.1:$KS_PORT"
  cat >"$state/keystone.conf" <<CONF
[DEFAULT]
log_file = $state/keystone.log
[database]
connection = $DB/keystone
[identity]
# bcrypt's fewest rounds: a password check costs a millisecond, not 0.3 s of CPU, and the tests
# sign in hundreds of times (every provider, controller restart and Octavia API user does).
password_hash_rounds = 4
[token]
provider = fernet
[fernet_tokens]
key_repository = $state/fernet-keys
[credential]
key_repository = $state/credential-keys
CONF
  export OS_KEYSTONE_CONFIG_DIR=$state OS_KEYSTONE_CONFIG_FILES=$state/keystone.conf
  km() { keystone-manage --config-file "$state/keystone.conf" "$@" 2>&1 | grep -v -e "^Exception ignored" -e "^Traceback" -e "^  File" -e "^AttributeError" >&2 || true; }
  km db_sync
  km fernet_setup --keystone-user root --keystone-group root
  km credential_setup --keystone-user root --keystone-group root
  km bootstrap --bootstrap-password "$PASSWORD" \
    --bootstrap-admin-url "http://127.0.0.1:$KS_PORT/v3/" \
    --bootstrap-internal-url "http://127.0.0.1:$KS_PORT/v3/" \
    --bootstrap-public-url "http://127.0.0.1:$KS_PORT/v3/" \
    --bootstrap-region-id RegionOne
  nohup keystone-wsgi-public --host 127.0.0.1 --port "$KS_PORT" >"$state/keystone-wsgi.log" 2>&1 &
  echo $! >"$state/keystone.pid"
  wait_http "http://127.0.0.1:$KS_PORT/v3" keystone-wsgi

  cat >"$state/clouds.yaml" <<YAML
clouds:
  l4lb-local:
    auth:
      auth_url: http://127.0.0.1:$KS_PORT/v3
      username: admin
      password: $PASSWORD
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
YAML
  cat >"$state/openrc" <<RC
export OS_AUTH_URL=http://127.0.0.1:$KS_PORT/v3
export OS_USERNAME=admin
export OS_PASSWORD=$PASSWORD
export OS_PROJECT_NAME=admin
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_REGION_NAME=RegionOne
export OS_IDENTITY_API_VERSION=3
RC
  export OS_CLIENT_CONFIG_FILE=$state/clouds.yaml OS_CLOUD=l4lb-local
  os() { openstack "$@" >/dev/null; }
  os project create --domain default service
  os user create --domain default --password neutron-pass neutron
  os role add --project service --user neutron admin
  os service create --name neutron network
  for iface in public internal admin; do
    os endpoint create --region RegionOne network "$iface" "http://127.0.0.1:$NEUTRON_PORT"
  done

  log "Neutron on 127.0.0.1:$NEUTRON_PORT"
  cat >"$state/neutron.conf" <<CONF
[DEFAULT]
core_plugin = ml2
service_plugins = router
transport_url = fake:/
auth_strategy = keystone
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
api_workers = 1
rpc_workers = 0
rpc_state_report_workers = 0
bind_host = 127.0.0.1
bind_port = $NEUTRON_PORT
state_path = $state/neutron
log_file = $state/neutron.log
[database]
connection = $DB/neutron
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:$KS_PORT
auth_url = http://127.0.0.1:$KS_PORT
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = neutron
password = neutron-pass
[oslo_concurrency]
lock_path = $state/lock
[ml2]
type_drivers = flat,vxlan
tenant_network_types = vxlan
mechanism_drivers =
extension_drivers = port_security
[ml2_type_flat]
flat_networks = *
[ml2_type_vxlan]
vni_ranges = 1:1000
CONF
  neutron-db-manage --config-file "$state/neutron.conf" upgrade heads >"$state/neutron-db.log" 2>&1
  nohup neutron-server --config-file "$state/neutron.conf" >"$state/neutron-server.log" 2>&1 &
  echo $! >"$state/neutron.pid"
  wait_http "http://127.0.0.1:$NEUTRON_PORT/" neutron-server

  log "the seed's networks"
  os network create private-net
  os subnet create --network private-net --subnet-range 192.0.2.0/24 private-subnet
  os network create --external --provider-network-type flat --provider-physical-network public public-net
  os subnet create --network public-net --subnet-range 203.0.113.0/24 --no-dhcp public-subnet
  os router create router-1
  os router set --external-gateway public-net router-1
  os router add subnet router-1 private-subnet
  echo "$state/clouds.yaml"
}

# stop-neutron / start-neutron: for tests of a cloud that goes away and comes back.
stop_neutron() { kill "$(cat "$state/neutron.pid")" 2>/dev/null || true; rm -f "$state/neutron.pid"
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$NEUTRON_PORT/" 2>/dev/null || return 0; sleep 0.1; done; }
start_neutron() {
  nohup neutron-server --config-file "$state/neutron.conf" >>"$state/neutron-server.log" 2>&1 &
  echo $! >"$state/neutron.pid"
  wait_http "http://127.0.0.1:$NEUTRON_PORT/" neutron-server
}

stop_keystone() { kill "$(cat "$state/keystone.pid")" 2>/dev/null || true; rm -f "$state/keystone.pid"
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$KS_PORT/v3" 2>/dev/null || return 0; sleep 0.1; done; }
start_keystone() {
  OS_KEYSTONE_CONFIG_DIR=$state OS_KEYSTONE_CONFIG_FILES=$state/keystone.conf \
    nohup keystone-wsgi-public --host 127.0.0.1 --port "$KS_PORT" >>"$state/keystone-wsgi.log" 2>&1 &
  echo $! >"$state/keystone.pid"
  wait_http "http://127.0.0.1:$KS_PORT/v3" keystone-wsgi
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  stop-neutron) stop_neutron ;;
  start-neutron) start_neutron ;;
  stop-keystone) stop_keystone ;;
  start-keystone) start_keystone ;;
  *) echo "usage: $0 up|down|stop-neutron|start-neutron|stop-keystone|start-keystone" >&2; exit 2 ;;
esac
