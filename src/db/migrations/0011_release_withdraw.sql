-- Schema 11: HQ can withdraw a release assignment (`release.withdraw`, docs/releases.md). The feed's
-- release rows get their event type (`assign` or `withdraw`) and their feed seq, so the updates task
-- takes them in feed order (rows of one batch share `received_ms`).

ALTER TABLE sync_releases ADD COLUMN type TEXT NOT NULL DEFAULT 'assign';
ALTER TABLE sync_releases ADD COLUMN seq INTEGER;
