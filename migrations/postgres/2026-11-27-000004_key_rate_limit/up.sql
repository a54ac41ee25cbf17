-- A key's own rate limit ("10/s"), overriding its role's; NULL means the role's.
ALTER TABLE api_keys ADD COLUMN rate_limit TEXT;
