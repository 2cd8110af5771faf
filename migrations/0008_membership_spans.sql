CREATE TABLE `former_members` (
	`conversation_id` text NOT NULL,
	`user_id` text NOT NULL,
	`joined_seq` integer NOT NULL,
	`left_seq` integer NOT NULL,
	`joined_at` integer NOT NULL,
	`left_at` integer NOT NULL,
	PRIMARY KEY(`conversation_id`, `user_id`)
);
--> statement-breakpoint
CREATE INDEX `former_members_user` ON `former_members` (`user_id`);--> statement-breakpoint
DROP INDEX `messages_conversation_ingest`;--> statement-breakpoint
CREATE INDEX `messages_conversation_ingest_seq` ON `messages` (`conversation_id`,`ingest_id`,`created_at`,`seq`);--> statement-breakpoint
ALTER TABLE `members` ADD `joined_seq` integer DEFAULT 0 NOT NULL;