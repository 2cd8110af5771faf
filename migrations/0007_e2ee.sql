ALTER TABLE `conversations` ADD `mls_epoch` integer;--> statement-breakpoint
ALTER TABLE `devices` ADD `signature_key` text;--> statement-breakpoint
ALTER TABLE `messages` ADD `payload` text;