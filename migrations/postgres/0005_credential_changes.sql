-- One counter that every change ending credentials (logout, a revoked token, a password change, a
-- deactivated or deleted account) increments after it commits. A server reads this one row
-- every second and, when it moved, checks the credentials of its open sockets again: so a change
-- made by another process (the command line, a node without Redis) still closes them.
CREATE TABLE credential_changes (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);
INSERT INTO credential_changes (id, generation) VALUES (1, 0);
