#!/usr/bin/env bash
# Registers l4lb's Octavia API in Keystone's catalog as the load-balancer service, so
# `openstack loadbalancer ...`, gophercloud and Terraform find it without flags, as they find
# Octavia. Run it with a cloud administrator's credentials (OS_CLOUD or the OS_* variables):
#
#   hack/octavia-catalog.sh http://octavia.example.com:9876 [RegionOne]
#
# Again with another URL moves the endpoints; nothing else in the catalog changes.
set -euo pipefail
url=${1:?usage: hack/octavia-catalog.sh URL [REGION]}
region=${2:-RegionOne}
service=$(openstack service list -f value -c ID -c Type | awk '$2 == "load-balancer" {print $1; exit}')
if [[ -z $service ]]; then
  service=$(openstack service create --name octavia --description "l4lb: Octavia's API over Kubernetes objects" -f value -c id load-balancer)
fi
for iface in public internal admin; do
  existing=$(openstack endpoint list --service "$service" --interface "$iface" --region "$region" -f value -c ID)
  if [[ -n $existing ]]; then
    openstack endpoint set --url "$url" "$existing"
  else
    openstack endpoint create --region "$region" "$service" "$iface" "$url" >/dev/null
  fi
done
echo "load-balancer ($service) at $url in $region"
