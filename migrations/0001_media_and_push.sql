CREATE TABLE `media` (
	`id` text PRIMARY KEY NOT NULL,
	`uploader_id` text NOT NULL,
	`content_type` text NOT NULL,
	`size` integer NOT NULL,
	`name` text NOT NULL,
	`r2_key` text NOT NULL,
	`status` text NOT NULL,
	`upload_id` text,
	`part_size` integer,
	`width` integer,
	`height` integer,
	`duration_ms` integer,
	`thumbnail_id` text,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `media_uploader` ON `media` (`uploader_id`);--> statement-breakpoint
CREATE TABLE `media_shares` (
	`media_id` text NOT NULL,
	`conversation_id` text NOT NULL,
	`created_at` integer NOT NULL,
	PRIMARY KEY(`media_id`, `conversation_id`)
);
--> statement-breakpoint
CREATE TABLE `push_subscriptions` (
	`endpoint` text PRIMARY KEY NOT NULL,
	`user_id` text NOT NULL,
	`device_id` text NOT NULL,
	`p256dh` text NOT NULL,
	`auth` text NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `push_subscriptions_user` ON `push_subscriptions` (`user_id`);--> statement-breakpoint
CREATE INDEX `push_subscriptions_device` ON `push_subscriptions` (`device_id`);