-- Least-privilege roles for an insgd-study results database (PostgreSQL 13 or newer, psql 15
-- or newer). Run it once per database, as the database owner or an administrator:
--
--   psql "host=DB_HOST user=postgres dbname=postgres" -v dbname=insgd -f deploy/postgres/roles.sql
--
-- psql variables (-v NAME=VALUE):
--   dbname   the results database (required; created beforehand with CREATE DATABASE)
--   writer   the login role of the study driver    (default insgd_writer)
--   reader   the login role of query/report/dashboard (default insgd_reader)
--   schema   the schema the tables live in          (default public)
-- Passwords never go on the command line: export INSGD_WRITER_PASSWORD and/or
-- INSGD_READER_PASSWORD before running psql to set them here (where the server logs DDL
-- statements, set them with psql's \password instead, which sends only a hash).
-- The script is idempotent: run it again after adding a role or restoring a dump.
--
-- writer: CONNECT; USAGE and CREATE on the schema (the driver creates and migrates the
--         insgd_* tables and Optuna's tables on first use, so it owns them); SELECT, INSERT,
--         UPDATE, DELETE on tables and USAGE, SELECT, UPDATE on sequences that another role
--         (e.g. an administrator running `insgd-study db upgrade`) created.
-- reader: CONNECT; USAGE on the schema; SELECT on every table, now and in the future (default
--         privileges for tables the writer or the administrator create); and every
--         transaction read-only by default, so even a grant made by mistake cannot be used
--         to write. No CREATE anywhere, no TEMPORARY.
-- PUBLIC loses CONNECT and TEMPORARY on the database and CREATE on the schema.

\set ON_ERROR_STOP on

SELECT :VERSION_NUM >= 150000 AS psql_is_new_enough \gset
\if :psql_is_new_enough
\else
  DO $$ BEGIN RAISE EXCEPTION 'roles.sql needs psql 15 or newer (for getenv)'; END $$;
\endif
\if :{?dbname}
\else
  DO $$ BEGIN RAISE EXCEPTION 'roles.sql: pass the results database with -v dbname=NAME'; END $$;
\endif
\if :{?writer}
\else
  \set writer insgd_writer
\endif
\if :{?reader}
\else
  \set reader insgd_reader
\endif
\if :{?schema}
\else
  \set schema public
\endif

\connect :"dbname"

-- The ALTER ROLE below strips powers: never point it at the role running this script.
SELECT :'writer' IN (current_user, session_user) OR :'reader' IN (current_user, session_user)
       OR :'writer' = :'reader' AS bad_role_names \gset
\if :bad_role_names
  DO $$ BEGIN RAISE EXCEPTION 'roles.sql: writer and reader must be two roles other than the one running it'; END $$;
\endif

-- Roles are cluster-wide: create them only where they do not exist yet.
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'writer') AS create_writer,
       NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'reader') AS create_reader \gset
\if :create_writer
  CREATE ROLE :"writer" LOGIN;
\endif
\if :create_reader
  CREATE ROLE :"reader" LOGIN;
\endif
-- ALTER DEFAULT PRIVILEGES FOR ROLE writer (below) needs membership in the writer role; a
-- superuser has it implicitly, a managed database's administrator (RDS, Cloud SQL) does not.
SELECT rolsuper AS running_as_superuser FROM pg_roles WHERE rolname = current_user \gset
\if :running_as_superuser
\else
  GRANT :"writer" TO CURRENT_USER;
\endif
-- Roles created elsewhere may carry more than a login: take it back.
ALTER ROLE :"writer" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE :"reader" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE :"reader" IN DATABASE :"dbname" SET default_transaction_read_only = on;

\getenv writer_password INSGD_WRITER_PASSWORD
\getenv reader_password INSGD_READER_PASSWORD
\if :{?writer_password}
  ALTER ROLE :"writer" PASSWORD :'writer_password';
  \unset writer_password
\endif
\if :{?reader_password}
  ALTER ROLE :"reader" PASSWORD :'reader_password';
  \unset reader_password
\endif

-- The database: only our two roles (and the owner / superusers) may connect.
REVOKE CONNECT, TEMPORARY ON DATABASE :"dbname" FROM PUBLIC;
REVOKE CREATE ON DATABASE :"dbname" FROM :"writer", :"reader";
GRANT CONNECT ON DATABASE :"dbname" TO :"writer", :"reader";

-- The schema.
CREATE SCHEMA IF NOT EXISTS :"schema";
REVOKE CREATE ON SCHEMA :"schema" FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA :"schema" TO :"writer";
REVOKE CREATE ON SCHEMA :"schema" FROM :"reader";
GRANT USAGE ON SCHEMA :"schema" TO :"reader";

-- Tables and sequences that exist now (owned by whoever created them).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA :"schema" TO :"writer";
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA :"schema" TO :"writer";
GRANT SELECT ON ALL TABLES IN SCHEMA :"schema" TO :"reader";

-- Tables created later by the writer (migrations run by the study driver).
ALTER DEFAULT PRIVILEGES FOR ROLE :"writer" IN SCHEMA :"schema"
    GRANT SELECT ON TABLES TO :"reader";
-- Tables created later by the role running this script (`insgd-study db upgrade` run by an
-- administrator).
ALTER DEFAULT PRIVILEGES IN SCHEMA :"schema"
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"writer";
ALTER DEFAULT PRIVILEGES IN SCHEMA :"schema"
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO :"writer";
ALTER DEFAULT PRIVILEGES IN SCHEMA :"schema"
    GRANT SELECT ON TABLES TO :"reader";

\echo 'roles.sql:' :writer '(read-write) and' :reader '(read-only) can use database' :dbname
