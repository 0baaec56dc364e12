-- The tunnels of each client as the primary last knew them, replicated so that a
-- client's tunnels are re-created on whichever node serves it next.
CREATE TABLE IF NOT EXISTS client_tunnels (
    client_id TEXT PRIMARY KEY,
    tunnels TEXT NOT NULL
);
