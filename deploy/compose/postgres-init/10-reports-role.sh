#!/bin/sh
# Run once by the postgres image when it initialises its data directory
# (docker-entrypoint-initdb.d): the role Grafana's PostgreSQL datasource logs
# in as. The analytics migration grants it SELECT on the analytics tables and
# nothing else (services/analytics/migrations/00002_reports_reader.sql), so
# a dashboard viewer cannot read messages or change anything.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
	-v pw="${CHAT_POSTGRES_REPORTS_PASSWORD:-reports}" <<'SQL'
CREATE ROLE chat_reports LOGIN PASSWORD :'pw';
SQL
