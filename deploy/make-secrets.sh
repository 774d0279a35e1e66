#!/usr/bin/env bash
# Generate the secrets of the one-machine rehearsal (deploy/compose.yaml) into DIR (default
# deploy/secrets): PostgreSQL's admin, writer and reader passwords, the writer's and the
# reader's database URLs, and a Ray authentication token. Existing files are kept, so running
# it again never changes a password the database already has. Nothing is printed, and no
# secret is ever a command-line argument. Values have no trailing newline, so a file can go
# into a Kubernetes Secret with `kubectl create secret --from-file` as it is.
#
#     deploy/make-secrets.sh [DIR]                               # compose: host `postgres`
#     INSGD_DB_HOST=insgd-postgres deploy/make-secrets.sh DIR    # Kubernetes (kuberay/)
set -euo pipefail

DIR="${1:-$(dirname "${BASH_SOURCE[0]}")/secrets}"
umask 077
mkdir -p "$DIR"
chmod 700 "$DIR"

random_hex() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }
create() {  # create FILE CONTENT: write once; world-readable inside a private directory, because
            # compose bind-mounts secret files as they are and the containers run as uid 1000/999
    [[ -s "$DIR/$1" ]] || printf '%s' "$2" > "$DIR/$1"
    chmod 644 "$DIR/$1"
}

create pg_admin_password "$(random_hex)"
create writer_password "$(random_hex)"
create reader_password "$(random_hex)"
create ray_token "$(random_hex)"
create writer_db_url "postgresql://insgd_writer:$(< "$DIR/writer_password")@${INSGD_DB_HOST:-postgres}:5432/insgd"
create reader_db_url "postgresql://insgd_reader:$(< "$DIR/reader_password")@${INSGD_DB_HOST:-postgres}:5432/insgd"
