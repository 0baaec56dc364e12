-- Tables of [database] db_type = "mysql" (MySQL / MariaDB), as upstream documents them.
-- Client credentials: [server] auth_table = "clients_auth"
CREATE TABLE `clients_auth` (
  `id` varchar(100) PRIMARY KEY,
  `password` varchar(100) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8;
-- API users: [api] auth_user_table = "users", auth_group_table = "groups",
-- auth_group_details_table = "group_details"
CREATE TABLE `users` (
  `username` varchar(150) NOT NULL,
  `password` varchar(255) NOT NULL,
  `password_expired` bool NOT NULL default false,
  `two_fa_send_to` varchar(150),
  `token` varchar(128) default NULL,
  `totp_secret` longtext,
  UNIQUE KEY `username` (`username`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8;
CREATE TABLE `groups` (
  `username` varchar(150) NOT NULL,
  `group` varchar(150) NOT NULL,
  UNIQUE KEY `username_group` (`username`,`group`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8;
CREATE TABLE `group_details` (
  `name` varchar(150) NOT NULL,
  `permissions` longtext DEFAULT '{}',
  UNIQUE KEY `name` (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8;
