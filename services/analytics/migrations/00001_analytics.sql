-- +goose Up
-- Daily active users and top words, one row set per UTC date; a re-run of a
-- date replaces its rows. Grafana reads these tables.
CREATE TABLE analytics_dau (
    date        date        PRIMARY KEY,
    users       integer     NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE analytics_words (
    date  date    NOT NULL,
    rank  integer NOT NULL,
    word  text    NOT NULL,
    count bigint  NOT NULL,
    PRIMARY KEY (date, rank)
);

-- +goose Down
DROP TABLE analytics_words;
DROP TABLE analytics_dau;
