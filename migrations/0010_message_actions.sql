CREATE TABLE `hidden_messages` (
	`user_id` text NOT NULL,
	`conversation_id` text NOT NULL,
	`seq` integer NOT NULL,
	PRIMARY KEY(`user_id`, `conversation_id`, `seq`)
);
--> statement-breakpoint
ALTER TABLE `messages` ADD `extra` text;