ALTER TABLE `conversations` ADD `description` text;--> statement-breakpoint
ALTER TABLE `users` ADD `photo_id` text;--> statement-breakpoint
CREATE INDEX `users_photo` ON `users` (`photo_id`);