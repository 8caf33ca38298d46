-- +goose Up
-- Dashboards read the reports through their own role: when the deployment
-- created a role named chat_reports (Compose's PostgreSQL does, for Grafana's
-- datasource), it may read the analytics tables and nothing else. Create the
-- role before the first analytics run, or grant it by hand:
--   GRANT SELECT ON analytics_dau, analytics_words TO chat_reports;
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'chat_reports') THEN
        GRANT SELECT ON analytics_dau, analytics_words TO chat_reports;
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'chat_reports') THEN
        REVOKE SELECT ON analytics_dau, analytics_words FROM chat_reports;
    END IF;
END
$$;
-- +goose StatementEnd
