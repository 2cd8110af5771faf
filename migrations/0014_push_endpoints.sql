CREATE TABLE `push_endpoints` (
	`endpoint` text PRIMARY KEY NOT NULL,
	`user_id` text NOT NULL
);
