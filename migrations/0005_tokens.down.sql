ALTER TABLE commands DROP COLUMN sent_by, DROP COLUMN token_id;
DROP TABLE api_tokens;
