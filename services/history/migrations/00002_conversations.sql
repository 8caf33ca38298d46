-- +goose Up
-- Edits and deletes (issue 12). A delete keeps the row as a tombstone with
-- empty content, so the generated search vector no longer matches it.
ALTER TABLE messages
    ADD COLUMN edited_at timestamptz,
    ADD COLUMN deleted   boolean NOT NULL DEFAULT false;

-- Unread counts: a conversation's messages after a log position.
CREATE INDEX messages_conversation_pos ON messages (conversation, log_partition, log_offset);
-- A user's private conversations (as sender and as receiver).
CREATE INDEX messages_dm_username ON messages (username, conversation) WHERE target IS NOT NULL;
CREATE INDEX messages_dm_target ON messages (target, conversation) WHERE target IS NOT NULL;

-- The state of chat.acl, as the follower folds it (chatevent.ACL).
CREATE TABLE rooms (
    room       text        PRIMARY KEY,
    private    boolean     NOT NULL,
    owner      text        NOT NULL,
    created_at timestamptz NOT NULL
);

-- Memberships; a row exists while the membership is not empty (a role, or
-- muted, or banned).
CREATE TABLE room_members (
    room     text    NOT NULL,
    username text    NOT NULL,
    role     text    NOT NULL DEFAULT '',   -- '', member, mod, owner
    muted    boolean NOT NULL DEFAULT false,
    banned   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (room, username)
);

CREATE TABLE blocks (
    username text NOT NULL,                 -- the blocker
    blocked  text NOT NULL,
    PRIMARY KEY (username, blocked)
);

-- The last read position per user and conversation ("room:<name>" or
-- "dm:<a>:<b>"); it only moves forward.
CREATE TABLE read_state (
    username      text        NOT NULL,
    conversation  text        NOT NULL,
    log_partition integer     NOT NULL,
    log_offset    bigint      NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (username, conversation)
);

-- +goose Down
DROP TABLE read_state;
DROP TABLE blocks;
DROP TABLE room_members;
DROP TABLE rooms;
DROP INDEX messages_dm_target;
DROP INDEX messages_dm_username;
DROP INDEX messages_conversation_pos;
ALTER TABLE messages DROP COLUMN deleted, DROP COLUMN edited_at;
