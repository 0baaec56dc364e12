-- Tables of [database] db_type = "postgres": the same columns as upstream's MySQL tables.
-- Client credentials: [server] auth_table = "clients_auth"
CREATE TABLE clients_auth (
  id varchar(100) PRIMARY KEY,
  password varchar(100) NOT NULL
);
-- API users: [api] auth_user_table = "users", auth_group_table = "groups",
-- auth_group_details_table = "group_details"
CREATE TABLE users (
  username varchar(150) NOT NULL UNIQUE,
  password varchar(255) NOT NULL,
  password_expired boolean NOT NULL DEFAULT false,
  two_fa_send_to varchar(150),
  token varchar(128) DEFAULT NULL,
  totp_secret text
);
CREATE TABLE groups (
  username varchar(150) NOT NULL,
  "group" varchar(150) NOT NULL,
  UNIQUE (username, "group")
);
CREATE TABLE group_details (
  name varchar(150) NOT NULL UNIQUE,
  permissions text DEFAULT '{}'
);
