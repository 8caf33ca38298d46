-- +goose Up
CREATE TABLE messages (
    id           uuid        PRIMARY KEY,            -- UUIDv7: orders by time
    type         text        NOT NULL,
    conversation text        NOT NULL,               -- "room:<name>" or "dm:<a>:<b>"
    room         text,
    username     text        NOT NULL,
    target       text,
    content      text        NOT NULL,
    client_id    text,
    created_at   timestamptz NOT NULL,
    topic        text        NOT NULL,
    log_partition integer    NOT NULL,
    log_offset   bigint      NOT NULL,
    search       tsvector    GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED
);

-- A retried send (same user, same client_id) is one row.
CREATE UNIQUE INDEX messages_username_client_id ON messages (username, client_id)
    WHERE client_id IS NOT NULL;

-- Keyset pages of one conversation, newest first or oldest first.
CREATE INDEX messages_conversation_id ON messages (conversation, id);

CREATE INDEX messages_search ON messages USING gin (search);

-- Records that could not be decoded: kept with their raw bytes and position,
-- skipped so they never block their partition.
CREATE TABLE dead_letters (
    topic         text        NOT NULL,
    log_partition integer     NOT NULL,
    log_offset    bigint      NOT NULL,
    key           bytea,
    value         bytea,
    error         text        NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, log_partition, log_offset)
);

-- +goose Down
DROP TABLE dead_letters;
DROP TABLE messages;
