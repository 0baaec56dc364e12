ALTER TABLE client_groups ADD allowed_user_groups TEXT NOT NULL DEFAULT '[]';
