-- Orion's PostgreSQL roles: one per component, least privilege (security issue,
-- item 8). Run by psql as a superuser, connected to Orion's database:
--
--   psql -v ON_ERROR_STOP=1 -d orion -v owner_password=... -v web_password=... \
--        -v worker_password=... -v relay_password=... -f roles.sql
--
-- `init-roles.sh` does that in the postgres container on a fresh volume. Running
-- it again is safe: existing roles are kept and their passwords set anew (that is
-- how a password is rotated). `-v prefix=...` names the roles <prefix>_owner,
-- <prefix>_app, ... (default "orion"; the tests use a prefix of their own, since
-- roles belong to the whole cluster).
--
--   <prefix>_owner   login; owns Orion's tables: the one-shot migrate service
--                    (Alembic) runs as it, and nothing else does
--   <prefix>_app     no login; SELECT, INSERT, UPDATE, DELETE on every table and
--                    USAGE, SELECT, UPDATE on every sequence the owner makes
--                    (default privileges: later migrations' tables included);
--                    no CREATE anywhere, and it owns nothing, so no ALTER or DROP
--   <prefix>_web, _worker, _relay
--                    login, members of <prefix>_app, one per component that
--                    touches the database, each with its own password (beat only
--                    sends tasks, which workers run; Flower and the SMTP sink read
--                    no table: none of them gets a role)
\set ON_ERROR_STOP on
\if :{?prefix}
\else
  \set prefix orion
\endif
\set owner :prefix _owner
\set app :prefix _app
\set web :prefix _web
\set worker :prefix _worker
\set relay :prefix _relay

SELECT format('CREATE ROLE %I NOLOGIN', :'app')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') \gexec
SELECT format('CREATE ROLE %I LOGIN', wanted.rolname)
  FROM unnest(ARRAY[:'owner', :'web', :'worker', :'relay']) AS wanted(rolname)
 WHERE NOT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = wanted.rolname) \gexec

-- psql quotes each password (:'...'); the server only ever stores its SCRAM hash.
ALTER ROLE :"owner" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'owner_password';
ALTER ROLE :"web" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'web_password';
ALTER ROLE :"worker" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'worker_password';
ALTER ROLE :"relay" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'relay_password';
GRANT :"app" TO :"web", :"worker", :"relay";

-- Only Orion's roles may connect to Orion's database.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I, %I', current_database(), :'owner', :'app') \gexec

-- Only the owner creates objects (PostgreSQL 15 no longer lets PUBLIC create in
-- schema public; older versions did).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"owner";
GRANT USAGE ON SCHEMA public TO :"app";

-- Tables and sequences the owner makes from now on (every migration's) ...
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
  GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO :"app";
-- ... and those that exist already (a database migrated before the roles were made).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"app";
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO :"app";
