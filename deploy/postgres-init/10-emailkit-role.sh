#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory (docker-entrypoint-initdb.d).
# emailkit connects as `emailkit`: the owner of its database and schema, but neither superuser nor BYPASSRLS,
# so the row-level security policies that keep workspaces apart hold for every statement it runs.
set -eu
psql -v ON_ERROR_STOP=1 -v pw="$EMAILKIT_DB_PASSWORD" --username "$POSTGRES_USER" --dbname postgres <<'SQL'
CREATE ROLE emailkit LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB PASSWORD :'pw';
CREATE DATABASE emailkit OWNER emailkit;
SQL
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname emailkit <<'SQL'
ALTER SCHEMA public OWNER TO emailkit;
-- So that the search and attribute indexes keep serving reads under row-level security (emailkit/db/rls.py).
ALTER FUNCTION textlike(text, text) LEAKPROOF;
ALTER FUNCTION texticlike(text, text) LEAKPROOF;
ALTER FUNCTION jsonb_contains(jsonb, jsonb) LEAKPROOF;
SQL
