-- Tables of [database] db_type = "sqlite", as upstream documents them.
-- Client credentials: [server] auth_table = "clients_auth"
CREATE TABLE `clients_auth` (
  `id` varchar(100) PRIMARY KEY,
  `password` varchar(100) NOT NULL
);
-- API users: [api] auth_user_table = "users", auth_group_table = "groups",
-- auth_group_details_table = "group_details"
CREATE TABLE "users" (
  "username" TEXT(150) NOT NULL,
  "password" TEXT(255) NOT NULL,
  "password_expired" BOOLEAN NOT NULL CHECK (password_expired IN (0, 1)) DEFAULT 0,
  "token" TEXT(36) DEFAULT NULL,
  "two_fa_send_to" TEXT(150),
  "totp_secret" TEXT
);
CREATE UNIQUE INDEX "main"."username" ON "users" ("username" ASC);
CREATE TABLE "groups" (
  "username" TEXT(150) NOT NULL,
  "group" TEXT(150) NOT NULL
);
CREATE UNIQUE INDEX "main"."username_group" ON "groups" ("username" ASC, "group" ASC);
CREATE TABLE "group_details" (
  "name" TEXT(150) NOT NULL,
  "permissions" TEXT DEFAULT '{}'
);
CREATE UNIQUE INDEX "main"."group_details_name" ON "group_details" ("name" ASC);
