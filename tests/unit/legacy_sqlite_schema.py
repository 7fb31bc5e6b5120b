"""SQLite's schema steps as released before the neutral schema definition (V1–V3), and
V4–V7 as first written in raw SQL (with NOT NULL on their text primary keys, which the
neutral form adds), to build the files that bots of those versions left: they must open
unchanged."""

LEGACY_STEPS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            storage_id TEXT NOT NULL UNIQUE,
            platform TEXT NOT NULL,
            space TEXT NOT NULL DEFAULT '',
            channel TEXT NOT NULL DEFAULT '',
            thread TEXT,
            dm_user TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            model TEXT,
            system_prompt TEXT
        )""",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            author_id TEXT NOT NULL DEFAULT '',
            content TEXT NOT NULL,
            platform_message_id TEXT NOT NULL DEFAULT '',
            tokens INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'interrupted', 'failed')),
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX messages_by_conversation ON messages (conversation_id, id)",
        """CREATE TABLE user_prefs (
            user_id TEXT PRIMARY KEY,
            model TEXT,
            system_prompt TEXT,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL,
            platform TEXT NOT NULL,
            model TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            at REAL NOT NULL
        )""",
        "CREATE INDEX usage_by_user ON usage (user_id, at)",
        """CREATE TABLE quota_counters (
            subject TEXT NOT NULL,
            dimension TEXT NOT NULL,
            window_start REAL NOT NULL,
            used REAL NOT NULL,
            PRIMARY KEY (subject, dimension, window_start)
        )""",
    ),
    ("ALTER TABLE usage ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0",),
    (
        """CREATE TABLE messages_v3 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            author_id TEXT NOT NULL DEFAULT '',
            content TEXT NOT NULL,
            platform_message_id TEXT NOT NULL DEFAULT '',
            tokens INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'interrupted', 'failed', 'streaming')),
            created_at REAL NOT NULL,
            reply_place TEXT NOT NULL DEFAULT '',
            reply_message_ids TEXT NOT NULL DEFAULT '[]'
        )""",
        """INSERT INTO messages_v3 (id, conversation_id, role, author_id, content,
            platform_message_id, tokens, status, created_at)
        SELECT id, conversation_id, role, author_id, content,
            platform_message_id, tokens, status, created_at FROM messages""",
        "DELETE FROM sqlite_sequence WHERE name = 'messages_v3'",
        """INSERT INTO sqlite_sequence (name, seq)
        SELECT 'messages_v3', seq FROM sqlite_sequence WHERE name = 'messages'""",
        "DROP TABLE messages",
        "ALTER TABLE messages_v3 RENAME TO messages",
        "CREATE INDEX messages_by_conversation ON messages (conversation_id, id)",
        "CREATE INDEX messages_streaming ON messages (id) WHERE status = 'streaming'",
    ),
    # V4: the response cache.
    (
        """CREATE TABLE response_cache (
            cache_key TEXT NOT NULL PRIMARY KEY,
            model TEXT NOT NULL,
            answer TEXT NOT NULL,
            reasoning TEXT NOT NULL DEFAULT '',
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            estimated INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX response_cache_by_age ON response_cache (created_at, cache_key)",
        "ALTER TABLE usage ADD COLUMN cached INTEGER NOT NULL DEFAULT 0",
    ),
    # V5: event claims.
    (
        """CREATE TABLE event_claims (
            event_id TEXT NOT NULL PRIMARY KEY,
            claimed_at REAL NOT NULL
        )""",
        "CREATE INDEX event_claims_by_age ON event_claims (claimed_at)",
    ),
    # V6: per-channel settings.
    (
        """CREATE TABLE channel_settings (
            platform TEXT NOT NULL,
            space TEXT NOT NULL,
            channel TEXT NOT NULL,
            system_prompt TEXT,
            model TEXT,
            mode TEXT NOT NULL DEFAULT 'mention' CHECK (mode IN ('mention', 'all')),
            updated_at REAL NOT NULL,
            updated_by TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (platform, space, channel)
        )""",
    ),
    # V7: strict model choices.
    (
        "ALTER TABLE user_prefs ADD COLUMN model_strict INTEGER",
        "ALTER TABLE conversations ADD COLUMN model_strict INTEGER",
    ),
    # V8: the whole ledger by time.
    ("CREATE INDEX usage_by_time ON usage (at)",),
)
