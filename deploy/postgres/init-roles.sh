#!/usr/bin/env bash
# Create insgd-study's roles in a fresh postgres container: the official image runs this from
# /docker-entrypoint-initdb.d/ on first start (deploy/compose.yaml mounts it there, next to
# roles.sql as roles.sql.in). Passwords come from the files named by INSGD_WRITER_PASSWORD_FILE
# and INSGD_READER_PASSWORD_FILE (Docker secrets) and reach psql through its environment only.
# Outside a container, run deploy/postgres/roles.sql with psql directly (deploy/README.md).
set -euo pipefail

ROLES_SQL="${INSGD_ROLES_SQL:-$(dirname "${BASH_SOURCE[0]}")/roles.sql.in}"
if [[ -n "${INSGD_WRITER_PASSWORD_FILE:-}" ]]; then
    INSGD_WRITER_PASSWORD="$(< "$INSGD_WRITER_PASSWORD_FILE")"
    export INSGD_WRITER_PASSWORD
fi
if [[ -n "${INSGD_READER_PASSWORD_FILE:-}" ]]; then
    INSGD_READER_PASSWORD="$(< "$INSGD_READER_PASSWORD_FILE")"
    export INSGD_READER_PASSWORD
fi
psql -v ON_ERROR_STOP=1 -q --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v dbname="${POSTGRES_DB:-insgd}" \
    -v writer="${INSGD_WRITER_ROLE:-insgd_writer}" \
    -v reader="${INSGD_READER_ROLE:-insgd_reader}" \
    -f "$ROLES_SQL"
