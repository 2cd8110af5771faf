-- Full-text search over plaintext messages (GET /search, docs/api.md "Search"). An FTS5 index
-- whose text is `messages.body` itself (external content: nothing is stored twice), kept in step
-- by triggers, so every way a body changes (an insert from the outbox, an edit, an erasure) changes
-- the index in the same statement. `secure-delete` removes a deleted body's terms from the index at
-- once instead of leaving them in old segments until a merge: a message deleted for everyone is
-- gone from the index too. E2EE messages have no body and are never indexed.
CREATE VIRTUAL TABLE `message_search` USING fts5(body, content='messages', content_rowid='ingest_id', tokenize='unicode61 remove_diacritics 2');
--> statement-breakpoint
INSERT INTO `message_search` (`message_search`, `rank`) VALUES ('secure-delete', 1);
--> statement-breakpoint
CREATE TRIGGER `message_search_insert` AFTER INSERT ON `messages`
WHEN new.kind IN ('text', 'media') AND new.body IS NOT NULL
BEGIN
  INSERT INTO `message_search` (rowid, body) VALUES (new.ingest_id, new.body);
END;
--> statement-breakpoint
CREATE TRIGGER `message_search_update` AFTER UPDATE OF body ON `messages`
WHEN new.kind IN ('text', 'media') AND old.body IS NOT new.body
BEGIN
  INSERT INTO `message_search` (`message_search`, rowid, body) SELECT 'delete', old.ingest_id, old.body WHERE old.body IS NOT NULL;
  INSERT INTO `message_search` (rowid, body) SELECT new.ingest_id, new.body WHERE new.body IS NOT NULL;
END;
--> statement-breakpoint
CREATE TRIGGER `message_search_delete` AFTER DELETE ON `messages`
WHEN old.kind IN ('text', 'media') AND old.body IS NOT NULL
BEGIN
  INSERT INTO `message_search` (`message_search`, rowid, body) VALUES ('delete', old.ingest_id, old.body);
END;
--> statement-breakpoint
INSERT INTO `message_search` (rowid, body) SELECT ingest_id, body FROM `messages` WHERE kind IN ('text', 'media') AND body IS NOT NULL;
