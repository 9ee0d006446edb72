#!/bin/sh
# The postgres image runs this once, on a fresh data volume
# (/docker-entrypoint-initdb.d), as its superuser: Orion's roles, one per
# component, from deploy/postgres/roles.sql (docker-compose.yml mounts both).
# Each password comes from this container's environment only; every Orion
# container gets just its own. To create or rotate the roles of an existing
# volume, run the same command with `docker compose exec postgres sh
# /docker-entrypoint-initdb.d/10-orion-roles.sh`.
psql -v ON_ERROR_STOP=1 --no-psqlrc \
  --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-orion}" \
  -v owner_password="${ORION_DB_OWNER_PASSWORD:?set ORION_DB_OWNER_PASSWORD}" \
  -v web_password="${ORION_DB_WEB_PASSWORD:?set ORION_DB_WEB_PASSWORD}" \
  -v worker_password="${ORION_DB_WORKER_PASSWORD:?set ORION_DB_WORKER_PASSWORD}" \
  -v relay_password="${ORION_DB_RELAY_PASSWORD:?set ORION_DB_RELAY_PASSWORD}" \
  -f /etc/orion/postgres/roles.sql
