-- Bearer tokens are signed now and their sessions live in the users' objects
-- (worker/lib/sessionTokens.ts): a token of an earlier version, looked up here by its hash, no
-- longer signs in. Its devices are marked logged out, as a logout would, so that nothing lists
-- them as signed in (the MLS directory) or pushes to them. A device signed in since this version
-- has a token hash starting with 's1:' and is left alone, whenever this runs.
DELETE FROM `push_subscriptions` WHERE `device_id` IN (
  SELECT `id` FROM `devices` WHERE `token_hash` IS NOT NULL AND `token_hash` NOT LIKE 's1:%'
);
--> statement-breakpoint
UPDATE `devices` SET `token_hash` = NULL, `revoked_at` = CAST(strftime('%s', 'now') AS INTEGER) * 1000
WHERE `token_hash` IS NOT NULL AND `token_hash` NOT LIKE 's1:%';
